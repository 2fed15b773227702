import { printable } from "../core/printable.js";
import { hostMatches, normaliseHost } from "../policy/hosts.js";

export interface TailFilters {
  denied?: boolean;
  host?: string;
  client?: string;
  /** "403", "4xx", or a comma list of either */
  status?: string;
}

/** A line's fields as `tail` reads them; a number whose digits held a secret is the string "[REDACTED]". */
export interface AuditLineFields {
  time?: number;
  msg?: string;
  level?: number;
  client?: string | null;
  decision?: string;
  status?: number | null;
  method?: string | null;
  scheme?: string | null;
  host?: string;
  port?: number | string;
  path?: string | null;
  duration_ms?: number | string;
  req_bytes?: number | string;
  resp_bytes?: number | string;
  rule?: string | null;
  reason?: string | null;
  error?: { type?: string; message?: string };
  ws?: { close_code?: number | null; closed_by?: string | null };
}

const STRING_FIELDS = ["msg", "client", "decision", "method", "scheme", "host", "path", "rule", "reason"] as const;
const NUMBER_FIELDS = ["time", "level", "status"] as const;
/** Numbers a rebuilt line may write as "[REDACTED]". */
const COUNT_FIELDS = ["port", "duration_ms", "req_bytes", "resp_bytes"] as const;

/**
 * The fields `tail` shows, each of the type it expects (anything else is left out): a line is
 * read from a file that anything could have written to, and one odd value must not end the view.
 * Not an object: undefined.
 */
export function lineFields(value: unknown): AuditLineFields | undefined {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return undefined;
  const raw = value as Record<string, unknown>;
  const fields: Record<string, unknown> = {};
  for (const key of STRING_FIELDS) if (typeof raw[key] === "string" || raw[key] === null) fields[key] = raw[key];
  for (const key of NUMBER_FIELDS) if (typeof raw[key] === "number" || raw[key] === null) fields[key] = raw[key];
  for (const key of COUNT_FIELDS) if (typeof raw[key] === "number" || typeof raw[key] === "string") fields[key] = raw[key];
  const error = raw.error;
  if (error && typeof error === "object") {
    const { type, message } = error as Record<string, unknown>;
    fields.error = { ...(typeof type === "string" ? { type } : {}), ...(typeof message === "string" ? { message } : {}) };
  }
  const ws = raw.ws;
  if (ws && typeof ws === "object") {
    const { close_code: code, closed_by: by } = ws as Record<string, unknown>;
    fields.ws = { ...(typeof code === "number" ? { close_code: code } : {}), ...(typeof by === "string" ? { closed_by: by } : {}) };
  }
  return fields as AuditLineFields;
}

function statusMatches(spec: string, status: number | null | undefined): boolean {
  if (status === null || status === undefined) return false;
  return spec.split(",").some((part) => {
    const wanted = part.trim().toLowerCase();
    if (/^[1-5]xx$/.test(wanted)) return Math.floor(status / 100) === Number(wanted[0]);
    return Number(wanted) === status;
  });
}

export function matchesFilters(line: AuditLineFields, filters: TailFilters): boolean {
  if (filters.denied && line.decision !== "deny") return false;
  if (filters.client !== undefined && line.client !== filters.client) return false;
  if (filters.host !== undefined && !(line.host && hostMatches(filters.host, normaliseHost(line.host)))) return false;
  if (filters.status !== undefined && !statusMatches(filters.status, line.status)) return false;
  return true;
}

const COLOURS = { red: 31, green: 32, yellow: 33, blue: 34, grey: 90, bold: 1 } as const;
type Colour = keyof typeof COLOURS;

export function humanBytes(bytes: number | string): string {
  if (typeof bytes !== "number") return printable(bytes);
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function clock(time: number | undefined): string {
  if (typeof time !== "number" || !Number.isFinite(time)) return "--:--:--.---";
  return new Date(time).toISOString().slice(11, 23);
}


/** One audit line as a person reads it: time, client, decision, status, method, URL, duration, bytes, why. */
export function formatLine(line: AuditLineFields, colour: boolean): string {
  const paint = (text: string, name: Colour) => (colour ? `\x1b[${COLOURS[name]}m${printable(text)}\x1b[0m` : printable(text));
  const denied = line.decision === "deny";
  const status = line.status ?? 0;
  // An answer portcullis made itself (error set) or any 4xx/5xx is not shown as a plain allow.
  const failed = !denied && (Boolean(line.error) || status >= 400);
  const tone: Colour = denied || status >= 500 || (line.level ?? 30) >= 50 ? "red" : status >= 400 || line.error || (line.level ?? 30) >= 40 ? "yellow" : "green";
  const verdict = denied ? "DENY" : failed ? "ERROR" : "allow";
  const defaultPort = line.scheme === "http" ? 80 : 443;
  const authority = line.port && line.port !== defaultPort ? `${line.host}:${line.port}` : (line.host ?? "");
  const target = line.msg === "tunnel" || line.method === "CONNECT" ? authority : `${authority}${line.path ?? ""}`;
  const parts = [
    paint(clock(line.time), "grey"),
    printable((line.client ?? "-").padEnd(10)),
    paint(verdict.padEnd(5), tone),
    paint(String(line.status ?? "---"), tone),
    printable((line.method ?? "-").padEnd(7)),
    line.msg === "websocket" ? `${paint("ws", "blue")} ${printable(target)}` : printable(target),
    typeof line.duration_ms === "string" ? printable(line.duration_ms) : `${Math.round(line.duration_ms ?? 0)}ms`,
    `↑${humanBytes(line.req_bytes ?? 0)} ↓${humanBytes(line.resp_bytes ?? 0)}`,
  ];
  if (denied) parts.push(paint(`${line.rule ? `[${line.rule}] ` : ""}${line.reason ?? ""}`, "red"));
  else if (line.error) parts.push(paint(`${line.error.type ?? "error"}: ${line.error.message ?? ""}`, tone));
  if (line.msg === "websocket" && line.ws) parts.push(paint(`close ${line.ws.close_code ?? "-"} by ${line.ws.closed_by ?? "-"}`, "grey"));
  return parts.join("  ");
}
