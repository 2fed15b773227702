import { Transform, type TransformCallback } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import { anyHostMatches } from "../../policy/hosts.js";
import { pathMatches } from "../../policy/paths.js";
import type { Policy, ResponseRule } from "../../policy/schema.js";
import { getHeader, removeHeaders, setHeader, type RawHeaders } from "../../core/headers.js";
import { isTextContentType } from "../../log/body-sample.js";
import type { Flow, Stage } from "../stage.js";

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

/** `responses` rules: response headers set or removed, text bodies rewritten line by line as they stream. */
export const responseRules: Stage = {
  name: "response-rules",
  active: (state) => state.policy.responses.length > 0,
  responseHeaders(flow: Flow, answer) {
    const { policy } = flow.state;
    if (policy.responses.length === 0) return;
    const rules = responseRulesFor(policy, flow.exchange.target.host, flow.exchange.normalisedPath);
    flow.notes.responseRules = rules;
    answer.headers = applyHeaderRules(answer.headers, rules);
  },
  responseBody(flow: Flow, _answer, upstream) {
    const rules = flow.notes.responseRules;
    if (!rules?.length || !isTextContentType(getHeader(upstream.headers, "content-type"))) return undefined;
    const replacements = replacementsOf(rules);
    if (replacements.length === 0) return undefined;
    // A body in a coding portcullis cannot decode is passed on as it came.
    return { transform: new LineReplacer(replacements), undecodable: () => "pass" };
  },
};
