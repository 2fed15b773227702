import type { IncomingMessage } from "node:http";
import { TLSSocket } from "node:tls";
import { isChunked } from "../../core/headers.js";
import type { InboundRequest } from "../../core/messages.js";
import { clientAddress, tunnelOf } from "../tunnel-context.js";

/** An HTTP/1.1 request as the pipeline sees it. */
export function inboundFromHttp1(req: IncomingMessage, upgrade: boolean): InboundRequest {
  const chunked = req.headers["transfer-encoding"] !== undefined && isChunked(req.rawHeaders);
  const length = Number(req.headers["content-length"] ?? 0);
  return {
    httpVersion: "1.1",
    method: req.method ?? "GET",
    target: req.url ?? "",
    authorities: req.headersDistinct.host ?? [],
    headers: req.rawHeaders,
    tunnel: tunnelOf(req.socket),
    secure: req.socket instanceof TLSSocket,
    clientAddr: clientAddress(req.socket),
    upgrade: upgrade ? (req.headers.upgrade ?? "") : undefined,
    // An upgrade request with a body is refused: any Transfer-Encoding counts as one there.
    hasBody: chunked || length > 0 || (upgrade && req.headers["transfer-encoding"] !== undefined),
    body: req,
    trailers: () => req.rawTrailers,
  };
}
