import { levelFor } from "../core/audit-record.js";
import type { PublishedRecord } from "../log/audit-feed.js";

export type SpanAttribute = string | number | boolean | string[];

/**
 * Audit fields never copied onto a span: the request headers and body sample are scrubbed in
 * the log, but a trace backend is a wider audience than the audit file; `level`, `time` and
 * `duration_ms` are the span's own status, end and length.
 */
const LEFT_OUT = new Set(["req_headers", "req_body", "level", "time", "msg"]);

/** The audit line's fields as span attributes: nested objects flattened (`ws.close_code`), nulls omitted. */
export function spanAttributes(record: PublishedRecord): Record<string, SpanAttribute> {
  const attributes: Record<string, SpanAttribute> = { kind: record.msg };
  const add = (key: string, value: unknown) => {
    if (value === null || value === undefined) return;
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") attributes[key] = value;
    else if (Array.isArray(value)) attributes[key] = value.map(String);
    else if (typeof value === "object") for (const [inner, v] of Object.entries(value)) add(`${key}.${inner}`, v);
  };
  for (const [key, value] of Object.entries(record)) if (!LEFT_OUT.has(key)) add(key, value);
  return attributes;
}

/** "GET api.github.com", "CONNECT example.com", "websocket GET example.com": low-cardinality (no path). */
export function spanName(record: PublishedRecord): string {
  const method = record.method ?? record.msg;
  return record.msg === "websocket" ? `websocket ${record.host}` : `${method} ${record.host || "-"}`;
}

/** An error span for 5xx answers and upstream or proxy faults, as the audit line's level says; denials are not faults. */
export function spanError(record: PublishedRecord): string | undefined {
  if (levelFor(record) !== "error") return undefined;
  return record.error?.message ?? `status ${record.status}`;
}
