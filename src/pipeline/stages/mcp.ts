import { errorAnswer, ProxyError } from "../../core/errors.js";
import { headerReason } from "../../core/reason-header.js";
import type { Exchange } from "../../core/exchange.js";
import { getHeader, getHeaderValues, removeHeaders, restrictAcceptEncoding, setHeader, type RawHeaders } from "../../core/headers.js";
import { rewriteAnswer } from "../../mcp/answers.js";
import { describeMcpVerdict, judgeToolCall, mcpRulesFor, toolVisible, type McpVerdict } from "../../mcp/evaluate.js";
import { batchText, describeBody, MAX_MCP_BODY_BYTES, NotJsonRpc, parseRpcBody, policyDeniedError, type RpcBody, type RpcMessage } from "../../mcp/jsonrpc.js";
import { endpointKey, LegacySessionRegistry, legacyEndpoint, requestUrl, type LegacyStream } from "../../mcp/legacy-sessions.js";
import { McpSseFilter, messageEvent } from "../../mcp/sse.js";
import type { McpRule } from "../../policy/schema.js";
import { contentCoding } from "../content-decoding.js";
import type { Answer, BodyTap, Flow, Stage, WholeAnswer } from "../stage.js";

/** The open streams of the older HTTP+SSE transport in this process, by the endpoint their client POSTs to. */
export const legacySessions = new LegacySessionRegistry();

const CONTENT_LENGTH = new Set(["content-length"]);

function origin(exchange: Exchange): string {
  const { scheme, host, port } = exchange.target;
  return `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** The old-transport stream this request's URL is the endpoint of, if one is open. */
function legacyStreamFor(exchange: Exchange): LegacyStream | undefined {
  const url = requestUrl(origin(exchange), exchange.path);
  return url === undefined ? undefined : legacySessions.find(endpointKey(exchange.tunnel.client, url));
}

function json(status: number, headers: RawHeaders, text: string): WholeAnswer {
  const body = Buffer.from(text);
  return { status, reason: undefined, headers: setHeader(setHeader(headers, "Content-Type", "application/json"), "Content-Length", String(body.length)), body };
}

/** A refused tool call on the exchange: one `denied` audit line naming the tools and the (first) rule. */
function recordDenials(exchange: Exchange, verdicts: readonly McpVerdict[]): void {
  const reason = verdicts.map(describeMcpVerdict).join("; ");
  exchange.decision = "deny";
  exchange.rule = verdicts[0]!.rule;
  exchange.reason = reason;
  exchange.error = { type: "policy_denied", message: reason };
}

/** What an answer the upstream sent could not be checked becomes: SPEC's 502, never the unchecked answer. */
function unreadableAnswer(exchange: Exchange, reason: string): WholeAnswer {
  exchange.error = { type: "upstream_protocol_error", message: reason };
  const error = errorAnswer(new ProxyError("upstream_protocol_error", reason), exchange.requestId, exchange.scrub);
  return { status: error.status, reason: undefined, headers: Object.entries(error.headers).flat(), body: Buffer.from(error.body) };
}

/**
 * The request's JSON-RPC messages judged: refused tool calls are never forwarded. Their errors
 * go on the session's stream (older transport) or, when nothing else is left to forward, make
 * the answer; otherwise the batch goes on without them and their errors wait to be merged
 * into the upstream's answer.
 */
function judgeMessages(flow: Flow, rules: readonly McpRule[], body: RpcBody, legacy: LegacyStream | undefined): void {
  const { exchange, outgoing } = flow;
  const kept: RpcMessage[] = [];
  const verdicts: McpVerdict[] = [];
  const errors: string[] = [];
  for (const message of body.messages) {
    const verdict = message.call && judgeToolCall(rules, message.call);
    if (!verdict) {
      kept.push(message);
      continue;
    }
    verdicts.push(verdict);
    // A notification gets no answer, refused or not.
    if (message.id !== undefined) errors.push(policyDeniedError(message.id, verdict.message, verdict.rule, verdict.tool));
  }
  if (verdicts.length === 0) return;
  recordDenials(exchange, verdicts);
  // A session stream that has just ended cannot take them: then they go on the POST's answer.
  const onStream = legacy !== undefined && legacy.inject(errors.map(messageEvent));
  if (kept.length === 0) {
    // Nothing left for the upstream. The older transport answers a POST 202 (the errors are on the stream).
    const headers = ["X-Portcullis-Error", "policy_denied", "X-Portcullis-Reason", headerReason(exchange.scrub(exchange.reason ?? verdicts[0]!.message))];
    if (onStream || errors.length === 0) flow.answer = { status: 202, reason: undefined, headers: [...headers, "Content-Type", "text/plain"], body: Buffer.from(onStream ? "Accepted" : "") };
    else flow.answer = json(200, headers, body.batch ? `[${errors.join(",")}]` : errors[0]!);
    return;
  }
  // Something is kept, so this was a batch: the rest goes on, as the client wrote it.
  outgoing.body = Buffer.from(batchText(kept));
  outgoing.headers = setHeader(removeHeaders(outgoing.headers, CONTENT_LENGTH), "Content-Length", String(outgoing.body.length));
  if (!onStream) flow.notes.mcp!.pendingAnswers = errors;
}

/** The answer to a POST whose refused calls' errors wait to be merged, when the upstream had nothing to say (202). */
function acceptedWithErrors(answer: Answer, errors: readonly string[]): BodyTap {
  return {
    undecodable: () => json(200, removeHeaders(answer.headers, new Set(["content-encoding"])), `[${errors.join(",")}]`),
    hold: { limit: MAX_MCP_BODY_BYTES, judge: () => json(200, answer.headers, `[${errors.join(",")}]`) },
  };
}

/** A JSON answer, held whole: tools lists filtered, errors of refused batch calls merged by id. Unreadable: 502. */
function jsonAnswer(exchange: Exchange, rules: readonly McpRule[], errors: readonly string[]): BodyTap {
  let edited: Buffer | undefined;
  return {
    undecodable: () => unreadableAnswer(exchange, "MCP answer could not be checked: unsupported Content-Encoding"),
    hold: {
      limit: MAX_MCP_BODY_BYTES,
      judge(body) {
        if (body === undefined) return unreadableAnswer(exchange, "MCP answer could not be checked: over 10 MiB, or not decodable");
        try {
          const text = rewriteAnswer(body.toString("utf8"), (name) => toolVisible(rules, name), errors);
          edited = text === undefined ? undefined : Buffer.from(text);
        } catch (error) {
          if (!(error instanceof NotJsonRpc)) throw error;
          return unreadableAnswer(exchange, "MCP answer could not be checked: it is not JSON");
        }
        return undefined;
      },
      edit: (body) => edited ?? body,
    },
  };
}

/** The longest acknowledgement text a 202 may carry unread. */
const ACKNOWLEDGEMENT_BYTES = 256;

/**
 * An answer to a request that is neither JSON nor an event stream: not read as either, so a tools
 * list in it would reach the client unfiltered. Empty, it passes; with a body, 502 (fail closed).
 * A 202 is an acknowledgement: a short line of printable ASCII with no bracket in it passes (the
 * older transport's "Accepted", whose POST can look like this one when --workers put its stream
 * in another process). Anything else could be read as JSON-RPC by some client: UTF-16 with or
 * without a byte-order mark, an event stream's text, a prefix before the JSON.
 */
function unlabelledAnswer(exchange: Exchange, contentType: string, acknowledgement: boolean): BodyTap {
  const refuse = () => unreadableAnswer(exchange, `MCP answer could not be checked: ${contentType ? `its Content-Type ${JSON.stringify(contentType.slice(0, 80))} is` : "it has no Content-Type, so it is"} neither JSON nor an event stream`);
  const harmless = (body: Buffer) => body.length === 0 || (acknowledgement && body.length <= ACKNOWLEDGEMENT_BYTES && /^[\x20-\x5a\x5c\x5e-\x7a\x7c\x7e\t\r\n]*$/.test(body.toString("latin1")));
  return {
    undecodable: refuse,
    hold: { limit: MAX_MCP_BODY_BYTES, judge: (body) => (body !== undefined && harmless(body) ? undefined : refuse()) },
  };
}

/** An event stream (a POST's answer or a GET stream), filtered as it flows; an old-transport stream is registered by its endpoint. */
function sseAnswer(flow: Flow, rules: readonly McpRule[], errors: readonly string[]): BodyTap {
  const { exchange } = flow;
  let abandon: () => void = () => undefined;
  let unregister: (() => void) | undefined;
  const filter: McpSseFilter = new McpSseFilter({
    visible: (name) => toolVisible(rules, name),
    prelude: errors.map(messageEvent),
    onEndpoint(data) {
      const endpoint = legacyEndpoint(`${origin(exchange)}${exchange.path}`, data);
      if (!endpoint) return;
      unregister?.();
      unregister = legacySessions.open(endpointKey(exchange.tunnel.client, endpoint.url), { session: endpoint.session, inject: (events) => filter.inject(events) });
      exchange.mcp = { ...(exchange.mcp ?? { method: "stream" }), session: endpoint.session };
    },
    onUnreadable(reason) {
      exchange.error = { type: "upstream_protocol_error", message: reason };
      abandon();
    },
    onClosed: () => unregister?.(),
  });
  return {
    transform: filter,
    undecodable: () => unreadableAnswer(exchange, "MCP event stream could not be checked: unsupported Content-Encoding"),
    onCut: (fn) => (abandon = fn),
  };
}

/**
 * Why a request body cannot be judged as the server will read it, if it cannot: portcullis reads
 * JSON as UTF-8, and a server that honours another charset (UTF-7's `+ACI-` is a quote) or a
 * Content-Encoding would see a different message than the one judged.
 */
function unjudgeableSpelling(headers: RawHeaders): string | undefined {
  const types = getHeaderValues(headers, "content-type");
  if (types.length > 1) return "the request has more than one Content-Type";
  // Every charset parameter: a server may take the last of several.
  for (const [, named] of (types[0] ?? "").matchAll(/;\s*charset\s*=\s*"?([^";\s]*)"?/gi)) {
    const charset = named!.toLowerCase();
    if (charset !== "utf-8" && charset !== "utf8") return `the request body must be UTF-8 JSON (Content-Type names charset ${JSON.stringify(charset.slice(0, 40))})`;
  }
  const coding = contentCoding(headers);
  if (coding !== undefined) return `a request body with Content-Encoding ${JSON.stringify(coding.slice(0, 40))} cannot be judged`;
  return undefined;
}

/**
 * MCP tool calls (SPEC section 9), on hosts (and paths) under an `mcp` rule, for both HTTP
 * transports (Streamable HTTP; the older HTTP+SSE). Request bodies are read and must be
 * JSON-RPC (else 400); a tools/call the rule does not allow is never forwarded and is answered
 * with a JSON-RPC error in the transport's own way; tools lists reach the client without the
 * tools it may not call, in JSON answers and in event streams.
 */
export const mcpPolicy: Stage = {
  name: "mcp",
  active: (state) => state.policy.mcp.length > 0,
  requestHeaders(flow: Flow) {
    const { state, exchange, request } = flow;
    if (state.policy.mcp.length === 0) return;
    const rules = mcpRulesFor(state.policy, exchange.target.host, exchange.pathReadings);
    if (rules.length === 0) return;
    flow.notes.mcp = { rules, pendingAnswers: [] };
    if (!flow.upgrade && (request.method === "POST" || request.hasBody)) flow.readBody = true;
  },
  request(flow: Flow) {
    const notes = flow.notes.mcp;
    if (!notes) return;
    const { exchange, outgoing, request } = flow;
    const rule = notes.rules[0]!.name;
    if (flow.upgrade) {
      throw new ProxyError("policy_denied", `WebSocket sessions to ${exchange.target.host} are not an MCP transport portcullis reads, so mcp rule ${rule} refuses them`, rule);
    }
    const legacy = legacyStreamFor(exchange);
    const session = getHeader(request.headers, "mcp-session-id") ?? legacy?.session;
    const withSession = <T extends object>(summary: T) => (session !== undefined ? { ...summary, session } : summary);
    // No body to judge: a GET stream, a session's DELETE (or explain's dry run, which reads no body).
    if (outgoing.body === undefined) {
      if (exchange.method === "GET") exchange.mcp = withSession({ method: "stream" });
      else if (exchange.method === "DELETE") exchange.mcp = withSession({ method: "terminate" });
      return;
    }
    const unreadable = unjudgeableSpelling(request.headers);
    if (unreadable) throw new ProxyError("bad_request", `mcp rule ${rule}: ${unreadable}`, rule);
    let body: RpcBody;
    try {
      body = parseRpcBody(outgoing.body);
    } catch (error) {
      if (!(error instanceof NotJsonRpc)) throw error;
      throw new ProxyError("bad_request", `mcp rule ${rule}: the request body is not JSON-RPC 2.0 (${error.message})`, rule);
    }
    exchange.mcp = withSession(describeBody(body));
    // The older transport's POST is answered 202 "Accepted": its answers come on the stream.
    if (!legacy && body.messages.some((message) => message.method !== undefined && message.id !== undefined)) notes.awaitsAnswer = true;
    judgeMessages(flow, notes.rules, body, legacy);
  },
  beforeForward(flow: Flow) {
    // The upstream must answer in a coding portcullis can read, or its tools lists go unfiltered.
    if (flow.notes.mcp) flow.outgoing.headers = restrictAcceptEncoding(flow.outgoing.headers);
  },
  responseHeaders(flow: Flow, _answer: Answer, upstream) {
    const { exchange } = flow;
    // The session starts with the answer to initialize.
    if (exchange.mcp && exchange.mcp.session === undefined) {
      const session = getHeader(upstream.headers, "mcp-session-id");
      if (session !== undefined) exchange.mcp.session = session;
    }
  },
  responseBody(flow: Flow, answer: Answer, upstream): BodyTap | undefined {
    const notes = flow.notes.mcp;
    if (!notes) return undefined;
    const errors = notes.pendingAnswers;
    if (answer.status === 202 && errors.length > 0) return acceptedWithErrors(answer, errors);
    if (answer.status < 200 || answer.status >= 300) return undefined;
    const contentType = getHeader(upstream.headers, "content-type")?.toLowerCase() ?? "";
    if (contentType.startsWith("text/event-stream")) return sseAnswer(flow, notes.rules, errors);
    if (/^application\/([\w.+-]*\+)?json/.test(contentType)) return jsonAnswer(flow.exchange, notes.rules, errors);
    if (notes.awaitsAnswer && answer.status !== 204) return unlabelledAnswer(flow.exchange, contentType, answer.status === 202);
    return undefined;
  },
};
