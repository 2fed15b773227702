import type { Exchange } from "./exchange.js";
import { getHeader, setHeader, stripHopByHop, type RawHeaders } from "./raw-headers.js";

/**
 * The stage between the upstream's answer and the client: hop-by-hop headers go, trailers
 * the upstream announced stay announced, and the request id comes back to the client.
 */
export function modifyResponseHeaders(exchange: Exchange, upstreamHeaders: RawHeaders, options: { upgrade?: boolean } = {}): RawHeaders {
  let headers = stripHopByHop(upstreamHeaders, options);
  const trailer = getHeader(upstreamHeaders, "trailer");
  if (trailer !== undefined) headers.push("Trailer", trailer);
  headers = setHeader(headers, "X-Request-Id", exchange.requestId);
  return headers;
}
