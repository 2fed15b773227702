import { Transform, type TransformCallback } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import { anyHostMatches } from "../policy/hosts.js";
import { pathMatches } from "../policy/paths.js";
import type { Policy, ResponseRule } from "../policy/schema.js";
import { removeHeaders, setHeader, type RawHeaders } from "./raw-headers.js";

export function responseRulesFor(policy: Policy, host: string, normalisedPath: string): ResponseRule[] {
  return policy.responses.filter((rule) => anyHostMatches(rule.hosts, host) && (!rule.paths || rule.paths.some((glob) => pathMatches(glob, normalisedPath))));
}

export function applyHeaderRules(headers: RawHeaders, rules: readonly ResponseRule[]): RawHeaders {
  let out = headers;
  for (const rule of rules) {
    if (rule.remove_headers) out = removeHeaders(out, new Set(rule.remove_headers.map((name) => name.toLowerCase())));
    for (const [name, value] of Object.entries(rule.set_headers ?? {})) out = setHeader(out, name, value);
  }
  return out;
}

export interface Replacement {
  pattern: RegExp;
  with: string;
}

export function replacementsOf(rules: readonly ResponseRule[]): Replacement[] {
  return rules.flatMap((rule) => (rule.replace ?? []).map((entry) => ({ pattern: new RegExp(entry.pattern, `g${entry.flags}`), with: entry.with })));
}

export function replaceAll(text: string, replacements: readonly Replacement[]): string {
  return replacements.reduce((current, { pattern, with: replacement }) => current.replace(pattern, replacement), text);
}

/**
 * Applies regex replacements to a text body line by line as it streams: each complete line
 * goes out at once (server-sent events keep flowing), only an unfinished last line waits.
 */
export class LineReplacer extends Transform {
  private readonly decoder = new StringDecoder("utf8");
  private partial = "";

  constructor(private readonly replacements: readonly Replacement[]) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const text = this.partial + this.decoder.write(chunk);
    const cut = text.lastIndexOf("\n") + 1;
    this.partial = text.slice(cut);
    if (cut > 0) this.push(replaceAll(text.slice(0, cut), this.replacements));
    callback();
  }

  override _flush(callback: TransformCallback): void {
    const rest = this.partial + this.decoder.end();
    if (rest) this.push(replaceAll(rest, this.replacements));
    callback();
  }
}
