import { STATUS_CODES } from "node:http";
import { getHeader, setHeader, stripHopByHop, type RawHeaders } from "../../core/headers.js";
import { scrubText } from "../../credentials/echo-scrub.js";
import { secretsAtStake } from "../secrets-at-stake.js";
import type { Answer, Flow, Stage } from "../stage.js";

/** The upstream's reason phrase, unless it is not plain text or carries a secret: then the standard one. */
function reasonPhrase(flow: Flow, status: number, phrase: string | undefined): string | undefined {
  if (phrase === undefined) return undefined;
  const secrets = secretsAtStake(flow);
  const scrubbed = secrets.length ? scrubText(phrase, secrets) : phrase;
  return /^[\t\x20-\x7e]*$/.test(scrubbed) && scrubbed === phrase ? phrase : (STATUS_CODES[status] ?? "");
}

/** Keeps an announced Trailer header (stripped as hop-by-hop) when trailers can follow. */
function keepTrailerAnnouncement(headers: RawHeaders, original: RawHeaders): RawHeaders {
  const trailer = getHeader(original, "trailer");
  if (trailer !== undefined) headers.push("Trailer", trailer);
  return headers;
}

/**
 * Header hygiene, both ways (RFC 9110 7.6.1): hop-by-hop headers go (the fixed list and
 * whatever Connection names; an upgrade keeps its Upgrade and Connection), the request id
 * is set, Host names the upstream. Nothing is added that would identify the sandbox (no
 * X-Forwarded-For, no Via).
 */
export const headerHygiene: Stage = {
  name: "header-hygiene",
  requestHeaders(flow: Flow) {
    const { outgoing, request, exchange } = flow;
    let headers = stripHopByHop(request.headers, { upgrade: flow.upgrade });
    if (outgoing.hasBody && getHeader(request.headers, "content-length") === undefined) headers = keepTrailerAnnouncement(headers, request.headers);
    if (flow.hostHeader !== undefined) headers = setHeader(headers, "Host", flow.hostHeader);
    outgoing.headers = setHeader(headers, "X-Request-Id", exchange.requestId);
  },
  responseHeaders(flow: Flow, answer: Answer, upstream) {
    const switching = flow.upgrade && upstream.status === 101;
    answer.reason = reasonPhrase(flow, answer.status, answer.reason);
    let headers = keepTrailerAnnouncement(stripHopByHop(upstream.headers, { upgrade: switching }), upstream.headers);
    headers = setHeader(headers, "X-Request-Id", flow.exchange.requestId);
    answer.headers = headers;
  },
};
