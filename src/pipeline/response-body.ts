import type { IncomingMessage } from "node:http";
import type { Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import { STATUS_CODES } from "node:http";
import { EchoScrubber, scrubHeaderValues, scrubText } from "../credentials/echo-scrub.js";
import { apiErrorBody } from "../llm/api-errors.js";
import { describeVerdict, evaluateToolCall, llmRulesFor } from "../llm/evaluate.js";
import { LlmSseGuard, MAX_LLM_BODY_BYTES, type Denial } from "../llm/sse-guard.js";
import { apiForBody, apiForPath, toolCallsInBody, UnparseableLlmResponse, type LlmApi } from "../llm/tool-calls.js";
import { isTextContentType } from "../log/body-sample.js";
import type { LlmRule } from "../policy/schema.js";
import type { Exchange } from "./exchange.js";
import { getHeader, removeHeaders, setHeader, stripHopByHop, type RawHeaders } from "./raw-headers.js";
import { applyHeaderRules, LineReplacer, replaceAll, replacementsOf, responseRulesFor, type Replacement } from "./response-rules.js";
import type { PolicyState } from "./runtime.js";
import { errorAnswer, ProxyError } from "./proxy-error.js";
import { recordError } from "./respond.js";

export interface Answer {
  status: number;
  statusMessage?: string;
  headers: RawHeaders;
}

/** Stream the body through `transforms` (none: untouched) after sending `answer`. */
export interface StreamPlan extends Answer {
  kind: "stream";
  transforms: Transform[];
  /** Set when an LLM stream guard may cut the stream; the upstream is then abandoned. */
  onCut?: (abandon: () => void) => void;
}

/** Read the whole (decoded) body first, then answer with what `finish` makes of it. */
export interface BufferPlan {
  kind: "buffer";
  decoder: Transform | undefined;
  limit: number;
  finish(body: Buffer | undefined): Answer & { body: Buffer };
}

export type ResponsePlan = StreamPlan | BufferPlan;

const DROPPED_WHEN_DECODED = new Set(["content-length", "content-encoding"]);
const CONTENT_LENGTH = new Set(["content-length"]);

function decoderFor(encoding: string | undefined): Transform | undefined | "unsupported" {
  if (encoding === undefined || encoding === "" || encoding === "identity") return undefined;
  if (encoding === "gzip" || encoding === "x-gzip") return createGunzip();
  if (encoding === "deflate") return createInflate();
  if (encoding === "br") return createBrotliDecompress();
  return "unsupported";
}

/** Records an LLM denial on the exchange: one `denied` audit line naming the tool and rule. */
function recordLlmDenial(exchange: Exchange, reason: string, rule: string | null): void {
  exchange.decision = "deny";
  exchange.rule = rule;
  exchange.reason = reason;
  exchange.error = { type: "policy_denied", message: reason };
}

function denialAnswer(exchange: Exchange, api: LlmApi | undefined, reason: string, rule: string | null): Answer & { body: Buffer } {
  recordLlmDenial(exchange, reason, rule);
  const body = Buffer.from(apiErrorBody(api, reason, rule));
  return {
    status: 400,
    headers: ["Content-Type", "application/json", "Content-Length", String(body.length), "X-Portcullis-Error", "policy_denied", "X-Request-Id", exchange.requestId],
    body,
  };
}

/** Judges a complete JSON response of an LLM API; any doubt denies. */
function judgeJson(rules: readonly LlmRule[], pathApi: LlmApi | undefined, body: Buffer | undefined): { api: LlmApi | undefined; denial?: { reason: string; rule: string | null } } {
  if (body === undefined) return { api: pathApi, denial: { reason: "LLM response over 10 MiB could not be checked", rule: null } };
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    return { api: pathApi, denial: { reason: "LLM response could not be checked: body is not valid JSON", rule: null } };
  }
  const api = pathApi ?? apiForBody(parsed);
  try {
    for (const call of toolCallsInBody(parsed)) {
      const verdict = evaluateToolCall(rules, call);
      if (verdict) return { api, denial: { reason: describeVerdict(verdict), rule: verdict.rule } };
    }
  } catch (error) {
    if (error instanceof UnparseableLlmResponse) return { api, denial: { reason: `LLM response could not be checked: ${error.message}`, rule: null } };
    throw error;
  }
  return { api };
}

/**
 * The modifyResponse stage. Headers: hop-by-hop dropped, announced trailers kept, request id
 * returned, `responses` header rules applied, echoed secrets scrubbed. Body: left untouched
 * unless a policy needs it — an `llm` rule (tool calls judged; JSON read whole, streams
 * watched event by event), a `responses` replacement, or a secret to scrub from an echo.
 */
/** The upstream's reason phrase, unless it is not plain text or carries a secret: then the standard one. */
function reasonPhrase(exchange: Exchange, status: number, phrase: string | undefined): string | undefined {
  if (phrase === undefined) return undefined;
  const scrubbed = exchange.injectedSecrets.length ? scrubText(phrase, exchange.injectedSecrets) : phrase;
  return /^[\t\x20-\x7e]*$/.test(scrubbed) && scrubbed === phrase ? phrase : (STATUS_CODES[status] ?? "");
}

/** A response portcullis refuses to pass on, answered with its own SPEC error instead. */
function refusal(exchange: Exchange, error: ProxyError): BufferPlan {
  return {
    kind: "buffer",
    decoder: undefined,
    limit: 0,
    finish() {
      recordError(exchange, error);
      const answer = errorAnswer(error, exchange.requestId, exchange.scrub);
      return { status: answer.status, headers: Object.entries(answer.headers).flat(), body: Buffer.from(answer.body) };
    },
  };
}

export function planResponse(exchange: Exchange, upstreamRes: IncomingMessage, state: PolicyState, options: { upgrade?: boolean } = {}): ResponsePlan {
  const status = upstreamRes.statusCode ?? 502;
  const statusMessage = reasonPhrase(exchange, status, upstreamRes.statusMessage);
  let headers = stripHopByHop(upstreamRes.rawHeaders, options);
  const trailer = getHeader(upstreamRes.rawHeaders, "trailer");
  if (trailer !== undefined) headers.push("Trailer", trailer);
  headers = setHeader(headers, "X-Request-Id", exchange.requestId);
  const { host } = exchange.target;
  const path = exchange.normalisedPath;
  const responseRules = state.policy.responses.length ? responseRulesFor(state.policy, host, path) : [];
  headers = applyHeaderRules(headers, responseRules);
  if (exchange.injectedSecrets.length) headers = scrubHeaderValues(headers, exchange.injectedSecrets);
  const plain: StreamPlan = { kind: "stream", status, statusMessage, headers, transforms: [] };
  // HEAD, 204 and 304 carry no body to judge or rewrite; upgrades relay raw bytes.
  const hasBody = exchange.method !== "HEAD" && status !== 204 && status !== 304;
  if (options.upgrade || !hasBody) return plain;
  // Nothing in the policy could want this body: no need to look at its type.
  if (state.policy.llm.length === 0 && responseRules.length === 0 && exchange.injectedSecrets.length === 0) return plain;

  const contentType = getHeader(upstreamRes.rawHeaders, "content-type")?.toLowerCase() ?? "";
  const isSse = contentType.startsWith("text/event-stream");
  const isJson = /^application\/([\w.+-]*\+)?json/.test(contentType);
  const llmRules = status >= 200 && status < 300 && state.policy.llm.length && (isSse || isJson) ? llmRulesFor(state.policy, host, path) : [];
  const replacements: Replacement[] = isTextContentType(contentType) ? replacementsOf(responseRules) : [];
  // Whatever the content type: an echo in an "octet-stream" body reaches the sandbox just the same.
  const scrubEcho = exchange.injectedSecrets.length > 0;
  if (llmRules.length === 0 && replacements.length === 0 && !scrubEcho) return plain;

  const decoder = decoderFor(getHeader(upstreamRes.rawHeaders, "content-encoding")?.trim().toLowerCase());
  const pathApi = apiForPath(path);
  if (decoder === "unsupported") {
    if (llmRules.length) {
      return { kind: "buffer", decoder: undefined, limit: 0, finish: () => denialAnswer(exchange, pathApi, "LLM response could not be checked: unsupported Content-Encoding", null) };
    }
    // A body that may echo a secret and cannot be decoded is not passed on (fail closed).
    if (scrubEcho) return refusal(exchange, new ProxyError("upstream_protocol_error", `response Content-Encoding cannot be checked for echoed credentials`));
    return plain;
  }
  const bodyHeaders = removeHeaders(headers, decoder ? DROPPED_WHEN_DECODED : CONTENT_LENGTH);

  if (llmRules.length && isJson) {
    return {
      kind: "buffer",
      decoder,
      limit: MAX_LLM_BODY_BYTES,
      finish(body) {
        const { api, denial } = judgeJson(llmRules, pathApi, body);
        if (denial) return denialAnswer(exchange, api, denial.reason, denial.rule);
        let text = body!.toString("utf8");
        if (replacements.length) text = replaceAll(text, replacements);
        if (scrubEcho) text = scrubText(text, exchange.injectedSecrets);
        const final = Buffer.from(text, "utf8");
        return { status, statusMessage, headers: setHeader(bodyHeaders, "Content-Length", String(final.length)), body: final };
      },
    };
  }

  const transforms: Transform[] = [];
  if (decoder) transforms.push(decoder);
  let onCut: StreamPlan["onCut"];
  if (llmRules.length) {
    let abandon: () => void = () => undefined;
    const guard = new LlmSseGuard(
      pathApi,
      (call) => {
        const verdict = evaluateToolCall(llmRules, call);
        return verdict && { message: describeVerdict(verdict), rule: verdict.rule };
      },
      (denial: Denial) => {
        recordLlmDenial(exchange, denial.message, denial.kind === "tool" ? denial.rule : null);
        abandon();
      },
    );
    transforms.push(guard);
    onCut = (fn) => (abandon = fn);
  }
  if (replacements.length) transforms.push(new LineReplacer(replacements));
  if (scrubEcho) transforms.push(new EchoScrubber(exchange.injectedSecrets));
  return { kind: "stream", status, statusMessage, headers: bodyHeaders, transforms, onCut };
}
