import type { IncomingMessage } from "node:http";
import type { Transform } from "node:stream";
import { EchoScrubber, scrubHeaderValues } from "../credentials/echo-scrub.js";
import { isTextContentType } from "../log/body-sample.js";
import type { Exchange } from "./exchange.js";
import { getHeader, removeHeaders, setHeader, stripHopByHop, type RawHeaders } from "./raw-headers.js";

export interface ModifiedResponse {
  headers: RawHeaders;
  /** Set when the body must pass through a transformer on its way to the client. */
  transform?: Transform;
}

const CONTENT_LENGTH = new Set(["content-length"]);

/**
 * The stage between the upstream's answer and the client: hop-by-hop headers go, announced
 * trailers stay announced, the request id comes back, and a secret the upstream echoes
 * (in a header or an uncompressed text body) is replaced by [REDACTED] before the sandbox sees it.
 */
export function modifyResponse(exchange: Exchange, upstreamRes: IncomingMessage, options: { upgrade?: boolean } = {}): ModifiedResponse {
  let headers = stripHopByHop(upstreamRes.rawHeaders, options);
  const trailer = getHeader(upstreamRes.rawHeaders, "trailer");
  if (trailer !== undefined) headers.push("Trailer", trailer);
  headers = setHeader(headers, "X-Request-Id", exchange.requestId);
  if (exchange.injectedSecrets.length === 0) return { headers };

  headers = scrubHeaderValues(headers, exchange.injectedSecrets);
  const encoding = getHeader(upstreamRes.rawHeaders, "content-encoding")?.trim().toLowerCase();
  const scannable = (encoding === undefined || encoding === "identity") && isTextContentType(getHeader(upstreamRes.rawHeaders, "content-type"));
  if (!scannable || options.upgrade) return { headers };
  // A replacement changes the length: the body is re-framed (chunked) by Node.
  return { headers: removeHeaders(headers, CONTENT_LENGTH), transform: new EchoScrubber(exchange.injectedSecrets) };
}
