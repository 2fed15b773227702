import { Transform, type TransformCallback } from "node:stream";
import { REDACTED } from "../core/audit-record.js";
import { escapeRegExp, mixedEncodingPattern, mixedEncodingPrefixPattern, secretForms } from "../log/secret-forms.js";
import type { RawHeaders } from "../core/headers.js";

function allForms(values: readonly string[]): string[] {
  return [...new Set(values.flatMap(secretForms))].sort((a, b) => b.length - a.length);
}

/** Every spelling of every secret, as latin1 strings of their UTF-8 bytes, so a byte stream can be searched as text. */
function byteForms(values: readonly string[]): string[] {
  return [...new Set(allForms(values).map((form) => Buffer.from(form, "utf8").toString("latin1")))].sort((a, b) => b.length - a.length);
}

/** Every listed spelling, then any mix of encoded and plain bytes: one alternation, longest first. */
function patternSource(forms: readonly string[], values: readonly string[]): string {
  return [...forms.map(escapeRegExp), ...values.map(mixedEncodingPattern)].join("|");
}

/** The most characters one byte of a secret can take in the spellings looked for (&lowbar;, &#x0002F;). */
const WIDEST_BYTE = 10;

/**
 * The compiled searches for sets of secrets, kept: building one (every spelling, every mix) costs
 * far more than running it, and header scrubbing runs one per field, on every answer.
 */
const compiled = new Map<string, RegExp>();

function searchFor(values: readonly string[], asBytes: boolean): RegExp {
  const key = `${asBytes ? "b" : "t"}\0${values.join("\0")}`;
  let pattern = compiled.get(key);
  if (!pattern) {
    pattern = new RegExp(patternSource(asBytes ? byteForms(values) : allForms(values), values), "g");
    // Bounded: secrets rotate (minted tokens), and each set is one entry.
    if (compiled.size >= 256) compiled.delete(compiled.keys().next().value!);
    compiled.set(key, pattern);
  }
  return pattern;
}

export function scrubText(text: string, values: readonly string[]): string {
  if (values.length === 0) return text;
  return text.replace(searchFor(values, false), REDACTED);
}

export function scrubHeaderValues(headers: RawHeaders, values: readonly string[]): RawHeaders {
  if (values.length === 0) return headers;
  const lowered = values.map((value) => value.toLowerCase());
  const out: RawHeaders = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    // A secret in a field's name cannot be redacted in place ("[" is no token character): the
    // field goes. Names are case-insensitive (h2 lower-cases them): compared in lower case.
    if (scrubText(name.toLowerCase(), lowered) !== name.toLowerCase()) continue;
    out.push(name, scrubText(headers[i + 1]!, values));
  }
  return out;
}

/**
 * Replaces secrets echoed by an upstream in a streaming body. Chunks flow on at once; only
 * a tail that could be the start of a secret split across chunks is held back.
 */
export class EchoScrubber extends Transform {
  private readonly secrets: string[];
  private readonly pattern: RegExp;
  /** Matches an unfinished mixed spelling at the very end of the text. */
  private readonly unfinished: RegExp;
  private readonly widest: number;
  private pending = "";
  replaced = 0;

  constructor(values: readonly string[]) {
    super();
    this.secrets = byteForms(values);
    this.pattern = new RegExp(patternSource(this.secrets, values), "g");
    this.unfinished = new RegExp(values.map(mixedEncodingPrefixPattern).join("|"));
    this.widest = Math.max(...values.map((value) => Buffer.byteLength(value) * WIDEST_BYTE));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const text = (this.pending + chunk.toString("latin1")).replace(this.pattern, () => (this.replaced++, REDACTED));
    const hold = this.partialSecretAtEnd(text);
    this.pending = text.slice(text.length - hold);
    const ready = text.slice(0, text.length - hold);
    if (ready.length) this.push(Buffer.from(ready, "latin1"));
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (this.pending.length) this.push(Buffer.from(this.pending, "latin1"));
    callback();
  }

  /** Length of the longest end of text that a secret starts with, in any spelling. */
  private partialSecretAtEnd(text: string): number {
    const tail = text.slice(-this.widest);
    const mixed = this.unfinished.exec(tail);
    let longest = mixed ? tail.length - mixed.index : 0;
    for (const secret of this.secrets) {
      for (let k = Math.min(secret.length - 1, text.length); k > longest; k--) {
        if (text.endsWith(secret.slice(0, k))) {
          longest = k;
          break;
        }
      }
    }
    return longest;
  }
}

/** A whole message (text or binary) with every spelling of every secret replaced; how many were. */
export function scrubBytes(data: Buffer, values: readonly string[]): { data: Buffer; replaced: number } {
  if (values.length === 0) return { data, replaced: 0 };
  let replaced = 0;
  const text = data.toString("latin1").replace(searchFor(values, true), () => (replaced++, REDACTED));
  return replaced ? { data: Buffer.from(text, "latin1"), replaced } : { data, replaced: 0 };
}
