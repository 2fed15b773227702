import type { IncomingMessage } from "node:http";
import type { Exchange } from "./exchange.js";
import { isChunked, setHeader, stripHopByHop, type RawHeaders } from "./raw-headers.js";

/** The request portcullis will send upstream; later stages edit it before it leaves. */
export interface OutgoingRequest {
  method: string;
  /** Path and query sent upstream (credentials and placeholders may change it). */
  path: string;
  headers: RawHeaders;
  hasBody: boolean;
  /** Set when the body had to be read before forwarding (placeholder substitution); sent instead of streaming. */
  body?: Buffer;
}

/**
 * First stage: the client's request made fit to travel on. Hop-by-hop headers go, the
 * request id is set, Host names the upstream; nothing is added that would identify the
 * sandbox (no X-Forwarded-For, no Via).
 */
export function rewriteRequest(req: IncomingMessage, exchange: Exchange, path: string, hostHeader: string | undefined, upgrade: boolean): OutgoingRequest {
  let headers = stripHopByHop(req.rawHeaders, { upgrade });
  const chunked = req.headers["transfer-encoding"] !== undefined && isChunked(req.rawHeaders);
  // Node frames the body itself; telling it "chunked" keeps a chunked body chunked whatever the method.
  if (chunked) headers.push("Transfer-Encoding", "chunked");
  const trailer = req.headers.trailer;
  if (trailer !== undefined && chunked) headers.push("Trailer", trailer);
  if (hostHeader !== undefined) headers = setHeader(headers, "Host", hostHeader);
  headers = setHeader(headers, "X-Request-Id", exchange.requestId);
  const length = Number(req.headers["content-length"] ?? 0);
  return { method: req.method ?? "GET", path, headers, hasBody: chunked || length > 0 };
}
