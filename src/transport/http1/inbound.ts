import type { IncomingMessage } from "node:http";
import { TLSSocket } from "node:tls";
import { isChunked } from "../../core/headers.js";
import type { InboundRequest } from "../../core/messages.js";
import { clientAddress, tunnelOf } from "../tunnel-context.js";

/** What the pipeline needs of an HTTP/1.1 request's head, in one pass over its raw headers. */
interface HeadFacts {
  /** Every Host value, in order. */
  hosts: string[];
  transferEncoding: boolean;
  /** The first Content-Length (llhttp refuses a request whose lengths disagree). */
  contentLength: number;
  /** Upgrade values joined with ", ", as Node's req.headers joins them. */
  upgrade: string | undefined;
}

// One pass rather than Node's req.headers and req.headersDistinct, two objects of every header built for four names.
function headFacts(raw: readonly string[]): HeadFacts {
  const facts: HeadFacts = { hosts: [], transferEncoding: false, contentLength: 0, upgrade: undefined };
  let lengthSeen = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    // Only these lengths can be a name asked for: most headers are passed over without lower-casing them.
    if (name.length !== 4 && name.length !== 7 && name.length !== 14 && name.length !== 17) continue;
    const value = raw[i + 1]!;
    switch (name.toLowerCase()) {
      case "host":
        facts.hosts.push(value);
        break;
      case "upgrade":
        facts.upgrade = facts.upgrade === undefined ? value : `${facts.upgrade}, ${value}`;
        break;
      case "content-length":
        if (!lengthSeen) facts.contentLength = Number(value);
        lengthSeen = true;
        break;
      case "transfer-encoding":
        facts.transferEncoding = true;
        break;
    }
  }
  return facts;
}

/** An HTTP/1.1 request as the pipeline sees it. */
export function inboundFromHttp1(req: IncomingMessage, upgrade: boolean): InboundRequest {
  const facts = headFacts(req.rawHeaders);
  const chunked = facts.transferEncoding && isChunked(req.rawHeaders);
  return {
    httpVersion: "1.1",
    method: req.method ?? "GET",
    target: req.url ?? "",
    authorities: facts.hosts,
    headers: req.rawHeaders,
    tunnel: tunnelOf(req.socket),
    secure: req.socket instanceof TLSSocket,
    clientAddr: clientAddress(req.socket),
    upgrade: upgrade ? (facts.upgrade ?? "") : undefined,
    // An upgrade request with a body is refused: any Transfer-Encoding counts as one there.
    hasBody: chunked || facts.contentLength > 0 || (upgrade && facts.transferEncoding),
    body: req,
    trailers: () => req.rawTrailers,
  };
}
