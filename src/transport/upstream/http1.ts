import http, { type ClientRequest, type IncomingMessage } from "node:http";
import https from "node:https";
import type { Socket } from "node:net";
import { createHash, randomBytes } from "node:crypto";
import { getHeader, getHeaderValues, headerPairs, setHeader, type RawHeaders } from "../../core/headers.js";
import type { OutgoingRequest, Target, UpstreamCall, UpstreamEvents, UpstreamResponse } from "../../core/messages.js";
import { ProxyError } from "../../core/errors.js";
import { formatAuthority, upstreamName } from "../../pipeline/target.js";
import { DestinationDenied } from "../../policy/destinations.js";
import { isIpLiteral } from "../../policy/hosts.js";
import { formatDuration } from "../../policy/duration.js";
import { classifyUpstreamError } from "./classify.js";
import { isAdopted } from "./http1-agents.js";
import type { ParentProxy } from "./parent-proxy.js";
import type { UpstreamSettings } from "./settings.js";

/**
 * A class, not an object literal with a getter: V8 keeps a literal's per-object accessor in a
 * hidden class (Map) of its own, in the old generation, and until the next full collection that
 * Map keeps the whole exchange it points to alive through every young-generation collection
 * (bench/RESULTS.md, "Exchanges that outlived themselves").
 */
class Http1UpstreamResponse implements UpstreamResponse {
  readonly httpVersion = "1.1" as const;
  readonly headOnly = false;
  readonly status: number;
  readonly reason: string | undefined;
  readonly headers: RawHeaders;

  constructor(readonly body: IncomingMessage) {
    this.status = body.statusCode ?? 502;
    this.reason = body.statusMessage;
    this.headers = body.rawHeaders;
  }

  get complete(): boolean {
    return this.body.complete;
  }

  trailers(): RawHeaders {
    return this.body.rawTrailers;
  }
}

/** The timers of one request: connect (until TCP, and TLS, is up) and response (until the response headers arrive). */
interface RequestTimers {
  /** The request has its socket: a new one is timed until connected and checked against dialling portcullis itself. */
  socket(socket: Socket): void;
  clear(): void;
}

/**
 * The connect timer runs until TCP (and TLS) is up; the response timer until the response
 * headers arrive. A name that resolves to portcullis itself is refused on the address dialled.
 */
function requestTimers(request: ClientRequest, target: Target, settings: UpstreamSettings, dialled: string): RequestTimers {
  const { connectMs, responseMs, guard } = settings;
  const responseTimer = setTimeout(
    () => request.destroy(new ProxyError("upstream_timeout", `${upstreamName(target)} sent no response headers within ${formatDuration(responseMs)}`)),
    responseMs,
  );
  let connectTimer: NodeJS.Timeout | undefined;
  return {
    socket(socket) {
      if (request.reusedSocket || isAdopted(socket)) return;
      // An in-flight request keeps its socket however long the body streams; idle pooled sockets still expire.
      request.setTimeout(0);
      connectTimer = setTimeout(
        () => request.destroy(new ProxyError("upstream_unreachable", `connecting to ${dialled} timed out after ${formatDuration(connectMs)}`)),
        connectMs,
      );
      socket.once(target.scheme === "https" ? "secureConnect" : "connect", () => clearTimeout(connectTimer));
      socket.once("connect", () => {
        const why = guard.checkSelf(socket.remoteAddress ?? "", socket.remotePort);
        if (why) request.destroy(new DestinationDenied(`${target.host} resolves to ${why.replace(/^destination /, "")}`));
      });
    },
    clear() {
      clearTimeout(responseTimer);
      clearTimeout(connectTimer);
    },
  };
}

const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/**
 * An upgrade that did not arrive as HTTP/1.1 (an h2 extended CONNECT, RFC 8441) has no
 * Upgrade, Connection or Sec-WebSocket-Key: this leg's handshake is portcullis' own, and
 * the key it makes is the one the upstream's Sec-WebSocket-Accept must answer (RFC 6455 4.1).
 */
function bridgeUpgrade(request: OutgoingRequest): { headers: RawHeaders; expectAccept: string | undefined } {
  const protocol = request.upgrade!;
  if (getHeader(request.headers, "upgrade") !== undefined) return { headers: request.headers, expectAccept: undefined };
  const headers = [...request.headers, "Connection", "Upgrade", "Upgrade", protocol];
  if (protocol.toLowerCase() !== "websocket" || getHeader(headers, "sec-websocket-key") !== undefined) return { headers, expectAccept: undefined };
  const key = randomBytes(16).toString("base64");
  headers.push("Sec-WebSocket-Key", key);
  return { headers, expectAccept: createHash("sha1").update(key + WEBSOCKET_GUID).digest("base64") };
}

/** h2 may split Cookie into several fields; HTTP/1.1 wants one, joined with "; " (RFC 9113 8.2.3). */
function joinCookies(headers: RawHeaders): RawHeaders {
  const cookies = getHeaderValues(headers, "cookie");
  return cookies.length > 1 ? setHeader(headers, "Cookie", cookies.join("; ")) : headers;
}

/** A call that never left: its failure is reported once the caller has its handle. */
export function failedCall(events: UpstreamEvents, error: ProxyError): UpstreamCall {
  queueMicrotask(() => events.error(error));
  return { write: () => true, onDrain: () => undefined, end: () => undefined, abort: () => undefined };
}

/** A plain-HTTP request sent to the parent proxy in absolute form (RFC 9112 3.2.2) rather than to the destination. */
export interface ViaParent {
  parent: ParentProxy;
  authorization: string | undefined;
}

/** The request-target the parent is sent: absolute form; `OPTIONS *` as the authority alone (RFC 9112 3.2.4). */
function absoluteForm(target: Target, path: string): string {
  const origin = `http://${formatAuthority(target.host, target.port, "http")}`;
  return path === "*" ? origin : `${origin}${path}`;
}

/** One request over an HTTP/1.1 keep-alive pool. */
export function sendHttp1(agent: http.Agent, settings: UpstreamSettings, target: Target, request: OutgoingRequest, events: UpstreamEvents, via?: ViaParent): UpstreamCall {
  const { scheme } = target;
  const host = via ? via.parent.host : target.host;
  const port = via ? via.parent.port : target.port;
  const dialled = via ? `the ${via.parent.name} (for ${upstreamName(target)})` : upstreamName(target);
  const bridged = request.upgrade !== undefined ? bridgeUpgrade(request) : undefined;
  let headers = joinCookies(bridged?.headers ?? request.headers);
  // Node frames the body itself; telling it "chunked" keeps a body without a length chunked whatever the method.
  if (request.hasBody && request.body === undefined && getHeader(headers, "content-length") === undefined) headers = [...headers, "Transfer-Encoding", "chunked"];
  if (via?.authorization) headers = [...headers, "Proxy-Authorization", via.authorization];
  const path = via ? absoluteForm(target, request.path) : request.path;
  const options: https.RequestOptions = { method: request.method, path, headers, host, port, agent };
  if (scheme === "https" && !isIpLiteral(target.host)) options.servername = target.host;
  let upstreamReq: ClientRequest;
  try {
    upstreamReq = (scheme === "https" ? https : http).request(options);
  } catch (error) {
    // Node refuses the head (a header value it cannot write): reported like any failure, never thrown at the caller.
    return failedCall(events, new ProxyError("internal_error", `cannot send the request to ${upstreamName(target)}: ${(error as Error).message}`));
  }
  const timers = requestTimers(upstreamReq, target, settings, dialled);
  let upgraded = false;
  let answered = false;
  // One listener per event ('socket', 'response', 'upgrade' and 'close' each come once): an
  // emitter with a single listener calls it without copying its listener list.
  upstreamReq.on("socket", (socket) => {
    timers.socket(socket);
    events.sent("1.1");
  });
  upstreamReq.on("continue", () => events.continue());
  upstreamReq.on("response", (res) => {
    timers.clear();
    answered = true;
    // The parent asking for credentials is the parent's refusal, never the destination's answer to relay.
    if (via && res.statusCode === 407) {
      upstreamReq.destroy();
      events.error(new ProxyError("upstream_unreachable", `the ${via.parent.name} refused the request for ${upstreamName(target)}: 407 ${res.statusMessage ?? ""}`.trimEnd()));
      return;
    }
    events.response(new Http1UpstreamResponse(res));
  });
  // Only a request that asked to switch protocols may: a 101 to anything else is a protocol
  // error (Node destroys the socket when nobody listens for 'upgrade').
  if (request.upgrade !== undefined) upstreamReq.on("upgrade", (res, socket: Socket, head: Buffer) => {
    timers.clear();
    upgraded = true;
    if (bridged?.expectAccept !== undefined && getHeader(res.rawHeaders, "sec-websocket-accept") !== bridged.expectAccept) {
      socket.destroy();
      events.error(new ProxyError("upstream_protocol_error", `${upstreamName(target)} answered the WebSocket handshake with a wrong Sec-WebSocket-Accept`));
      return;
    }
    socket.setTimeout(0);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    events.upgraded(new Http1UpstreamResponse(res), socket, head);
  });
  upstreamReq.on("error", (error) => {
    answered = true;
    if (!upgraded) events.error(classifyUpstreamError(error, dialled));
  });
  // Closed with neither an answer nor an error (Node drops a 101 nobody asked for this way).
  upstreamReq.on("close", () => {
    timers.clear();
    if (!answered && !upgraded) events.error(new ProxyError("upstream_protocol_error", `${upstreamName(target)} closed the connection without a usable answer`));
  });

  return {
    write: (chunk) => upstreamReq.write(chunk),
    onDrain: (listener) => void upstreamReq.on("drain", listener),
    end(trailers) {
      if (trailers?.length) upstreamReq.addTrailers(headerPairs(trailers));
      upstreamReq.end();
    },
    abort: () => upstreamReq.destroy(),
  };
}
