import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { REDACTED, type AuditError, type AuditMessage, type AuditRecord, type LlmSummary, type McpSummary, type WebSocketSummary } from "./audit-record.js";
import { headersForLog, type RawHeaders } from "./headers.js";
import type { HttpVersion, Target } from "./messages.js";

/** What a CONNECT established, carried to every request inside the tunnel. */
export interface TunnelContext {
  host: string;
  port: number;
  client: string | null;
  clientAddr: string;
}

const REQUEST_ID_OK = /^[\x21-\x7e]{1,200}$/;
const ALWAYS_REDACTED = ["authorization", "cookie", "proxy-authorization"];

export function requestIdFrom(clientValue: string | undefined): string {
  return clientValue && REQUEST_ID_OK.test(clientValue) ? clientValue : randomUUID();
}

/**
 * One request's journey through the pipeline: what the client asked, what each stage
 * decided, and the figures the audit line reports. Written to the audit log exactly once.
 */
export class Exchange {
  readonly startedAt = performance.now();
  status: number | null = null;
  reqBytes = 0;
  respBytes = 0;
  decision: "allow" | "deny" = "allow";
  rule: string | null = null;
  reason: string | null = null;
  readonly credentials: string[] = [];
  readonly placeholders: string[] = [];
  /** Secret values put on this request; an upstream echoing one back has it scrubbed from the response. */
  readonly injectedSecrets: string[] = [];
  /** Lower-case names shown as [REDACTED] in req_headers: the fixed three plus every injected header. */
  readonly redactedHeaders = new Set(ALWAYS_REDACTED);
  error: AuditError | undefined;
  reqBody: string | undefined;
  ws: WebSocketSummary | undefined;
  /** An MCP exchange: what it asked of the server. */
  mcp: McpSummary | undefined;
  /** An LLM API exchange: the usage it reported. */
  llm: LlmSummary | undefined;
  /** What the audit line waits for before it is written (usage still being read from a compressed body). */
  auditAfter: Promise<void> | undefined;
  /** The protocol the upstream answered in, once it did. */
  upstreamVersion: HttpVersion | undefined;
  /**
   * Every way an upstream might read the path (the policy must allow them all); the first is
   * the path as rules see it. Set when the request is located.
   */
  pathReadings: string[] = [];
  private written = false;

  constructor(
    readonly requestId: string,
    readonly tunnel: TunnelContext,
    readonly target: Target,
    readonly method: string,
    /** The path and query exactly as the client sent them, before any substitution. */
    readonly path: string,
    readonly clientHeaders: RawHeaders,
    /** The protocol the client spoke. */
    readonly httpVersion: HttpVersion,
    /** Removes every known secret value from text portcullis writes itself (error bodies). */
    readonly scrub: (text: string) => string = (text) => text,
  ) {}

  /** The path as rules see it (see normalisePath in policy/paths). */
  get normalisedPath(): string {
    return this.pathReadings[0] ?? this.path;
  }

  /** Every reading of the path, or the path as sent before it was located. */
  get readings(): readonly string[] {
    return this.pathReadings.length ? this.pathReadings : [this.path];
  }

  /** Marks the exchange logged; false when it already was. */
  claimAuditLine(): boolean {
    if (this.written) return false;
    this.written = true;
    return true;
  }

  toRecord(msg: AuditMessage): AuditRecord {
    return {
      msg,
      req_id: this.requestId,
      client: this.tunnel.client,
      client_addr: this.tunnel.clientAddr,
      method: this.method,
      scheme: this.target.scheme,
      host: this.target.host,
      port: this.target.port,
      path: this.path,
      status: this.status,
      duration_ms: Math.round((performance.now() - this.startedAt) * 100) / 100,
      req_bytes: this.reqBytes,
      resp_bytes: this.respBytes,
      decision: this.decision,
      rule: this.rule,
      reason: this.reason,
      credentials: this.credentials,
      placeholders: this.placeholders,
      ...(this.error ? { error: this.error } : {}),
      req_headers: headersForLog(this.clientHeaders, (name) => this.redactedHeaders.has(name), REDACTED),
      ...(this.reqBody !== undefined ? { req_body: this.reqBody } : {}),
      ...(this.ws ? { ws: this.ws } : {}),
      ...(this.mcp ? { mcp: this.mcp } : {}),
      ...(this.llm ? { llm: this.llm } : {}),
      http_version: this.httpVersion,
      ...(this.upstreamVersion ? { upstream_version: this.upstreamVersion } : {}),
    };
  }
}
