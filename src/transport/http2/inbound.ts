import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { RawHeaders } from "../../core/headers.js";
import type { InboundRequest } from "../../core/messages.js";
import { clientAddress, tunnelOf } from "../tunnel-context.js";
import { withoutPseudoHeaders } from "./headers.js";

function text(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * An h2 stream as the pipeline sees it. RFC 8441 extended CONNECT (`:protocol`) is a
 * WebSocket handshake with GET semantics; :authority and any Host count as the request's
 * authorities (they must agree, RFC 9113 8.3.1).
 */
export function inboundFromHttp2(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: readonly string[]): InboundRequest {
  const method = text(headers[":method"]) ?? "";
  const protocol = text(headers[":protocol"]);
  const extendedConnect = method === "CONNECT" && protocol !== undefined;
  const authorities = new Set<string>();
  const authority = text(headers[":authority"]);
  if (authority !== undefined) authorities.add(authority);
  const regular = withoutPseudoHeaders(rawHeaders);
  for (let i = 0; i < regular.length; i += 2) if (regular[i] === "host") authorities.add(regular[i + 1]!);
  let trailers: RawHeaders = [];
  stream.once("trailers", (_headers: unknown, _flags: number, raw: string[]) => (trailers = withoutPseudoHeaders(raw)));
  const socket = stream.session?.socket;
  return {
    httpVersion: "2",
    method: extendedConnect ? "GET" : method,
    target: text(headers[":path"]) ?? "",
    authorities: [...authorities],
    headers: regular,
    tunnel: tunnelOf(socket),
    secure: stream.session?.encrypted ?? false,
    clientAddr: clientAddress(socket),
    upgrade: extendedConnect ? protocol : undefined,
    // An extended CONNECT stream stays open for the session's bytes: that is not a request body.
    hasBody: !extendedConnect && !stream.endAfterHeaders,
    body: stream,
    trailers: () => trailers,
  };
}
