/** What every log line and error body shows in place of a secret. */
export const REDACTED = "[REDACTED]";

export type AuditMessage = "http" | "websocket" | "tunnel" | "denied";

export interface AuditError {
  type: string;
  message: string;
}

export interface WebSocketSummary {
  protocol: string | null;
  extensions: string | null;
  close_code: number | null;
  closed_by: "client" | "upstream" | "error" | null;
  /** Inspected sessions only: messages each way, and those a stage denied or scrubbed. */
  messages?: { client: number; upstream: number; denied: number; scrubbed: number };
}

/** An MCP exchange (SPEC section 9): the JSON-RPC method, the tool of a tools/call, the session. */
export interface McpSummary {
  method: string;
  tool?: string;
  session?: string;
}

/** An LLM API exchange (SPEC section 4): the API, the model and the usage it reported (fields it did not report are absent). */
export interface LlmSummary {
  api: "anthropic" | "openai-chat" | "openai-responses" | "openai-realtime";
  model?: string;
  input_tokens?: number;
  output_tokens?: number;
  cache_read_tokens?: number;
  cache_write_tokens?: number;
}

/** One canonical audit line (SPEC section 4). */
export interface AuditRecord {
  msg: AuditMessage;
  req_id: string | null;
  client: string | null;
  client_addr: string | null;
  method: string | null;
  scheme: "http" | "https" | null;
  host: string;
  port: number;
  path: string | null;
  status: number | null;
  duration_ms: number;
  req_bytes: number;
  resp_bytes: number;
  decision: "allow" | "deny";
  rule: string | null;
  reason: string | null;
  credentials: string[];
  placeholders: string[];
  error?: AuditError;
  req_headers?: Record<string, string | string[]>;
  req_body?: string;
  ws?: WebSocketSummary;
  mcp?: McpSummary;
  llm?: LlmSummary;
  /** The protocol the client spoke inside the tunnel (or on the listener). */
  http_version?: "1.1" | "2";
  /** The protocol spoken to the upstream; absent when nothing was sent. */
  upstream_version?: "1.1" | "2";
}

export type AuditLevel = "info" | "warn" | "error";

/** Faults on the upstream side or inside portcullis; anything else that went wrong is the client's. */
const SERVER_SIDE_ERRORS = /^(upstream_|credential_|certificate_)/;

/** error for 5xx and upstream/proxy faults, warn for denials, 4xx and client-side failures, info otherwise. */
export function levelFor(record: AuditRecord): AuditLevel {
  if ((record.status !== null && record.status >= 500) || (record.error && SERVER_SIDE_ERRORS.test(record.error.type))) return "error";
  if (record.decision === "deny" || record.error || (record.status !== null && record.status >= 400)) return "warn";
  return "info";
}
