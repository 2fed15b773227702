import type { OutgoingHttpHeaders } from "node:http2";
import type { RawHeaders } from "../../core/headers.js";

/** RFC 9113 8.2.2: connection-specific fields never travel in h2 (TE only as "trailers"). */
const CONNECTION_SPECIFIC = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings"]);

/** Fields Node's h2 encoder takes only once (it throws on a second); an HTTP/1.1 peer may have sent two. */
const SINGLE_VALUE = new Set([
  "access-control-allow-credentials", "access-control-max-age", "access-control-request-method", "age", "authorization",
  "content-encoding", "content-language", "content-length", "content-location", "content-md5", "content-range",
  "content-type", "date", "dnt", "etag", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match",
  "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards", "proxy-authorization", "range",
  "referer", "retry-after", "tk", "upgrade-insecure-requests", "user-agent", "x-content-type-options",
]);

/**
 * A header list as an h2 header block: names lower-cased (RFC 9113 8.2.1), connection-specific
 * fields dropped, repeated fields kept as arrays, `omit` left out (they become pseudo-headers).
 */
export function toHttp2Headers(raw: RawHeaders, pseudo: OutgoingHttpHeaders, omit: ReadonlySet<string> = EMPTY): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ...pseudo };
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    let value = raw[i + 1]!;
    if (CONNECTION_SPECIFIC.has(name) || omit.has(name) || name.startsWith(":")) continue;
    if (name === "te") {
      if (!value.toLowerCase().split(",").some((token) => token.trim() === "trailers")) continue;
      value = "trailers";
    }
    const existing = out[name];
    if (existing === undefined) out[name] = value;
    else if (SINGLE_VALUE.has(name)) continue;
    else out[name] = Array.isArray(existing) ? [...existing, value] : [String(existing), value];
  }
  return out;
}

const EMPTY: ReadonlySet<string> = new Set();

/** Node's raw h2 header list without its pseudo-headers (":method", ":path", ...). */
export function withoutPseudoHeaders(raw: readonly string[]): RawHeaders {
  const out: RawHeaders = [];
  for (let i = 0; i < raw.length; i += 2) if (!raw[i]!.startsWith(":")) out.push(raw[i]!, raw[i + 1]!);
  return out;
}
