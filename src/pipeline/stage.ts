import type { Transform } from "node:stream";
import type { Exchange } from "../core/exchange.js";
import type { RawHeaders } from "../core/headers.js";
import type { InboundRequest, OutgoingRequest, UpstreamResponse } from "../core/messages.js";
import type { PlaceholderHit } from "../credentials/placeholders.js";
import type { LlmMessageGuard } from "../llm/message-guard.js";
import type { UsageNotes } from "./stages/budgets.js";
import type { LlmRule, McpRule, ResponseRule } from "../policy/schema.js";
import type { PolicyState } from "./context.js";
import type { Hooks } from "./hooks.js";

/** What stages learnt about an exchange that a later hook of the same stage needs. */
export interface FlowNotes {
  placeholders?: PlaceholderHit[];
  llmRules?: LlmRule[];
  responseRules?: ResponseRule[];
  /** Tool calls held across the messages of an inspected LLM WebSocket session. */
  llmGuard?: LlmMessageGuard;
  /**
   * The mcp rules of this exchange, and portcullis' answers to refused calls of a batch, merged
   * into the upstream's; `awaitsAnswer` when the POST carried a request the answer must hold
   * (streamable HTTP: its answer is JSON or an event stream, and nothing else is read).
   */
  mcp?: { rules: McpRule[]; pendingAnswers: string[]; awaitsAnswer?: boolean };
  /** An LLM exchange whose usage is read (for the audit line, metrics and budgets). */
  usage?: UsageNotes;
  /**
   * Known values of the secrets scoped to the host, whether or not this request carried them, and
   * their union with the injected ones as of `injectedSeen` of them (secretsAtStake).
   */
  secretsAtStake?: { scoped: readonly string[]; injectedSeen: number; all: readonly string[] };
}

/** One exchange as the stages see it: what came in, what will go out, and the policy it runs under. */
export interface Flow {
  readonly exchange: Exchange;
  readonly request: InboundRequest;
  readonly outgoing: OutgoingRequest;
  /** The policy this exchange started under; a reload mid-flight does not change it. */
  readonly state: PolicyState;
  readonly hooks: readonly Hooks[];
  /** The stages with something to do under this policy (activeStages), in the list's order: the only ones the phases run. */
  readonly stages: readonly Stage[];
  /** The Host the request is sent with when it is not the client's own (absolute form, h2 :authority). */
  readonly hostHeader: string | undefined;
  /** An upgrade handshake (a WebSocket, over HTTP/1.1 Upgrade or h2 extended CONNECT). */
  readonly upgrade: boolean;
  /**
   * Set by a requestHeaders hook that must see the body before the request is judged: the
   * runner reads it whole into `outgoing.body` (at most MAX_READ_BODY_BYTES; a larger body is
   * refused 400 bad_request).
   */
  readBody: boolean;
  /** Set by a requestHeaders hook that must see (at least) the first bytes of the body before it is judged; the rest may stream. */
  readBodyStart?: number;
  /**
   * Set by a request hook to answer the request itself: it is never forwarded, no later request
   * hook runs and no secret is resolved for it; the answer goes through the response phase
   * (onResponse hooks) to the client, with X-Request-Id and Content-Length set by the runner,
   * and the exchange gets its one audit line like any other. For answers in a protocol's own
   * shape (a JSON-RPC error with HTTP 200); a plain refusal is a thrown ProxyError.
   */
  answer?: WholeAnswer;
  readonly notes: FlowNotes;
}

/** The head of the answer about to be sent; stages edit it in place. */
export interface Answer {
  status: number;
  reason: string | undefined;
  headers: RawHeaders;
}

export interface WholeAnswer extends Answer {
  body: Buffer;
}

/**
 * Reads a response body as it passes, without changing or holding back a byte: it gets the
 * upstream's bytes as they came (still content-coded), then `end` (complete: false when the
 * body was cut off or not relayed).
 */
export interface BodyObserver {
  write(chunk: Buffer): void;
  end(complete: boolean): void;
}

/** What a stage wants of a response body. */
export interface BodyTap {
  /** Watch the body go by; a tap with only an observer leaves the body untouched (no decoding for the client). */
  observe?: BodyObserver;
  /** A streaming transform over the decoded body. */
  transform?: Transform;
  /** Judge the whole decoded body (at most `limit` bytes) before anything is sent; a returned answer replaces it. */
  hold?: {
    limit: number;
    judge(body: Buffer | undefined): WholeAnswer | undefined;
    /** Once every judge let it pass: the body the client gets instead; the taps' transforms still run over it. */
    edit?(body: Buffer): Buffer;
  };
  /** The body's Content-Encoding cannot be decoded: the answer to send instead, or "pass" to relay it untouched. */
  undecodable(): WholeAnswer | "pass";
  /** The tap may end the body early (an LLM guard): `abandon` then drops the rest of the upstream's answer. */
  onCut?(abandon: () => void): void;
}

type Maybe<T> = T | Promise<T>;

/** One whole message of an inspected WebSocket session (fragments reassembled, decompressed). */
export interface WsMessage {
  readonly from: "client" | "upstream";
  readonly binary: boolean;
  data: Buffer;
}

/** A stage ends the session: both sides get a close frame with this code. */
export interface WsEnd {
  close: number;
  reason: string;
}

/**
 * A stage of the pipeline: a small object with hooks named after the events of an exchange.
 * Hooks run in the order of the stage list (pipeline/stages.ts), each phase for every stage
 * before the next phase starts. A hook refuses the exchange by throwing a ProxyError; a
 * request hook may instead answer it itself, in the protocol's own terms, by setting
 * `flow.answer` (see Flow.answer).
 */
export interface Stage {
  readonly name: string;
  /**
   * False when nothing in the policy state gives this stage work: it is then left out of every
   * phase of every exchange under that policy. Absent: always runs. It may read only what the
   * state fixes for its lifetime (the list is built once per state): never the programmatic
   * hooks, which may be added while the proxy runs.
   */
  active?(state: PolicyState): boolean;
  /** The request head arrived: shape what goes out, say whether the body must be read first. */
  requestHeaders?(flow: Flow): void;
  /** The request is complete as far as judging goes (head, and the body if it was read): allow or refuse. */
  request?(flow: Flow): Maybe<void>;
  /** The request is allowed: put the real credentials on it. */
  beforeForward?(flow: Flow): Maybe<void>;
  /** The upstream's response head arrived: edit what the client will get. */
  responseHeaders?(flow: Flow, answer: Answer, upstream: UpstreamResponse): void;
  /** The upstream's trailers arrived: what the client gets instead. */
  responseTrailers?(flow: Flow, trailers: RawHeaders): RawHeaders;
  /** What the stage needs of the response body, if anything. */
  responseBody?(flow: Flow, answer: Answer, upstream: UpstreamResponse): BodyTap | undefined;
  /** The last look at the head before it is sent (after a held body was judged). */
  response?(flow: Flow, answer: Answer): Maybe<void>;
  /** A WebSocket session is about to start: true when this stage must read its messages. */
  webSocketSession?(flow: Flow): boolean;
  /** A message of an inspected session: what goes on in its place (none: held or dropped), or the end of the session. */
  webSocketMessage?(flow: Flow, message: WsMessage): Maybe<WsMessage[] | WsEnd>;
  /**
   * A ping's or pong's data, or a close frame's reason, as it goes on (inspected sessions):
   * control frames are not held with the messages, so this is synchronous, and what it returns
   * must still fit the frame (125 bytes; a close reason 123, in UTF-8).
   */
  webSocketControl?(flow: Flow, from: "client" | "upstream", payload: Buffer): Buffer;
}
