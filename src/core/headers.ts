/**
 * Headers as they travel: a flat [name, value, name, value, ...] list like Node's rawHeaders,
 * so names keep their case and order end to end.
 */
export type RawHeaders = string[];

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  // RFC 9113 3.2.1: the HTTP/1.1 to h2 upgrade's settings belong to that one connection.
  "http2-settings",
]);

/**
 * Fields a trailer may not carry (RFC 9110 6.5.1): framing, routing, authentication and how
 * the content is to be read. A recipient that merged them into the head would be steered by them.
 */
export const FORBIDDEN_IN_TRAILERS: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  "content-length",
  "content-encoding",
  "content-type",
  "content-range",
  "host",
  "authorization",
  "cookie",
  "set-cookie",
  "expect",
  "max-forwards",
  "cache-control",
]);

/**
 * Lower-casing (String.prototype.toLowerCase, the root locale's rules: final sigma keeps the
 * length, and Turkish or Lithuanian rules apply only to toLocaleLowerCase) changes a string's
 * length in one way only: İ (U+0130) becomes i and a combining dot (U+0307). So when the name
 * asked for has no such dot, a header whose name is of another length cannot be it, and is
 * passed over without being lower-cased: most of a request's headers, on every lookup
 * (test/headers.test.ts checks this against plain lower-casing).
 */
function anyLength(lower: string): boolean {
  return lower.includes("\u0307");
}

function isNamed(name: string, lower: string, anyNameLength: boolean): boolean {
  return (anyNameLength || name.length === lower.length) && name.toLowerCase() === lower;
}

export function getHeader(raw: RawHeaders, name: string): string | undefined {
  const lower = name.toLowerCase();
  const any = anyLength(lower);
  for (let i = 0; i < raw.length; i += 2) if (isNamed(raw[i]!, lower, any)) return raw[i + 1];
  return undefined;
}

export function getHeaderValues(raw: RawHeaders, name: string): string[] {
  const lower = name.toLowerCase();
  const any = anyLength(lower);
  const values: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (isNamed(raw[i]!, lower, any)) values.push(raw[i + 1]!);
  return values;
}

/** Replaces every header called name with one value, keeping the position of the first. */
export function setHeader(raw: RawHeaders, name: string, value: string): RawHeaders {
  const lower = name.toLowerCase();
  const any = anyLength(lower);
  const out: RawHeaders = [];
  let placed = false;
  for (let i = 0; i < raw.length; i += 2) {
    if (!isNamed(raw[i]!, lower, any)) out.push(raw[i]!, raw[i + 1]!);
    else if (!placed) {
      out.push(raw[i]!, value);
      placed = true;
    }
  }
  if (!placed) out.push(name, value);
  return out;
}

export function removeHeaders(raw: RawHeaders, names: ReadonlySet<string>): RawHeaders {
  const out: RawHeaders = [];
  for (let i = 0; i < raw.length; i += 2) if (!names.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  return out;
}

const EMPTY: ReadonlySet<string> = new Set();

/** The comma-separated tokens of header values, trimmed and lower-cased, empty ones dropped. */
function tokens(values: string[]): string[] {
  const out: string[] = [];
  for (const value of values) {
    for (const item of value.split(",")) {
      const token = item.trim().toLowerCase();
      if (token) out.push(token);
    }
  }
  return out;
}

/**
 * Drops hop-by-hop headers: the fixed list and every header the Connection header names.
 * On an upgrade, `Connection: Upgrade` and `Upgrade` travel on (they are the handshake).
 * `TE: trailers` travels on, as in Go's ReverseProxy: it says the client can take trailers.
 */
export function stripHopByHop(raw: RawHeaders, options: { upgrade?: boolean } = {}): RawHeaders {
  // Most requests name nothing in Connection beyond keep-alive/close: skip building the set then.
  const connection = getHeaderValues(raw, "connection");
  const named = connection.length ? new Set(tokens(connection)) : EMPTY;
  const out: RawHeaders = [];
  let connectionPlaced = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    const value = raw[i + 1]!;
    if (options.upgrade && lower === "connection") {
      if (!connectionPlaced) out.push(name, "Upgrade");
      connectionPlaced = true;
      continue;
    }
    if (options.upgrade && lower === "upgrade") {
      out.push(name, value);
      continue;
    }
    if (lower === "te" && tokens([value]).includes("trailers")) {
      out.push(name, "trailers");
      continue;
    }
    if (HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    out.push(name, value);
  }
  return out;
}

/** The headers as an object for logging: original case, repeated headers as arrays. */
export function headersForLog(raw: RawHeaders, redact: (lowerName: string) => boolean, redacted: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = redact(name.toLowerCase()) ? redacted : raw[i + 1]!;
    const existing = out[name];
    if (existing === undefined) out[name] = value;
    else out[name] = Array.isArray(existing) ? [...existing, value] : [existing, value];
  }
  return out;
}

const DECODABLE = new Set(["gzip", "x-gzip", "deflate", "br", "identity"]);

/**
 * Keeps only the content codings portcullis can decode in Accept-Encoding, for responses it
 * must read (LLM rules, echoed secrets): an upstream must not answer in zstd what cannot be checked.
 */
export function restrictAcceptEncoding(raw: RawHeaders): RawHeaders {
  const values = getHeaderValues(raw, "accept-encoding");
  if (values.length === 0) return raw;
  const kept = values
    .flatMap((value) => value.split(","))
    .map((item) => item.trim())
    .filter((item) => DECODABLE.has(item.split(";")[0]!.trim().toLowerCase()));
  return setHeader(raw, "Accept-Encoding", kept.length ? kept.join(", ") : "identity");
}

export function isChunked(raw: RawHeaders): boolean {
  return tokens(getHeaderValues(raw, "transfer-encoding")).includes("chunked");
}

/** The list as [name, value] pairs (what Node's addTrailers and h2's header objects are built from). */
export function headerPairs(raw: RawHeaders): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}
