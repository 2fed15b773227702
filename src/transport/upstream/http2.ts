import http2, { constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from "node:http2";
import type { TLSSocket } from "node:tls";
import { destroyOnError } from "../../core/destroy-on-error.js";
import { ProxyError } from "../../core/errors.js";
import { getHeader, type RawHeaders } from "../../core/headers.js";
import type { OutgoingRequest, Target, UpstreamCall, UpstreamEvents, UpstreamResponse } from "../../core/messages.js";
import { formatAuthority, upstreamName } from "../../pipeline/target.js";
import { formatDuration } from "../../policy/duration.js";
import { toHttp2Headers, withoutPseudoHeaders } from "../http2/headers.js";
import { resetStream } from "../http2/reset.js";
import { classifyUpstreamError } from "./classify.js";
import { failedCall } from "./http1.js";
import type { UpstreamSettings } from "./settings.js";

/** Per-stream and per-connection receive windows (see transport/http2/server.ts for why). */
const STREAM_WINDOW = 1024 * 1024;
const SESSION_WINDOW = 16 * 1024 * 1024;
/** A session with no stream for this long is closed. */
const IDLE_MS = 30_000;
/** While streams are open, a PING this often; no answer within PING_TIMEOUT_MS and the session is dropped. */
const PING_EVERY_MS = 30_000;
const PING_TIMEOUT_MS = 10_000;
/** Host travels as :authority. */
const AS_PSEUDO = new Set(["host"]);

/** One pooled h2 connection to an upstream and the streams it carries. */
export class Http2Connection {
  active = 0;
  /** Settles when the peer's SETTINGS arrived (its stream limit is known), or the session failed first. */
  readonly ready: Promise<void>;
  private readonly pinger: NodeJS.Timeout;

  constructor(
    readonly session: ClientHttp2Session,
    onGone: (connection: Http2Connection) => void,
  ) {
    this.ready = new Promise((resolve) => {
      session.once("remoteSettings", () => resolve());
      session.once("close", () => resolve());
    });
    session.on("error", destroyOnError);
    // GOAWAY: streams in flight finish, new ones go to a new session.
    session.once("goaway", () => onGone(this));
    session.once("close", () => {
      clearInterval(this.pinger);
      onGone(this);
    });
    session.setTimeout(IDLE_MS, () => {
      if (this.active === 0) session.close();
    });
    this.pinger = setInterval(() => this.ping(), PING_EVERY_MS);
    this.pinger.unref();
  }

  /** Whether another stream may start here: open, not going away, under the peer's concurrency limit. */
  get available(): boolean {
    const session = this.session;
    if (session.closed || session.destroyed || (session as ClientHttp2Session & { goawayReceived?: boolean }).goawayReceived) return false;
    const limit = session.remoteSettings.maxConcurrentStreams ?? 100;
    return this.active < limit;
  }

  private ping(): void {
    if (this.active === 0 || this.session.destroyed) return;
    const timer = setTimeout(() => this.session.destroy(), PING_TIMEOUT_MS);
    this.session.ping((error) => {
      clearTimeout(timer);
      if (error) this.session.destroy();
    });
  }
}

/** An h2 session over a TLS socket that already negotiated h2. */
export function openHttp2Connection(target: Target, socket: TLSSocket, onGone: (connection: Http2Connection) => void): Http2Connection {
  const session = http2.connect(`https://${formatAuthority(target.host, target.port)}`, {
    createConnection: () => socket,
    settings: { initialWindowSize: STREAM_WINDOW, enablePush: false },
    // Node's default is 128 fields, which an answer with many cookies passes; HTTP/1.1 answers may carry 2,000.
    maxHeaderListPairs: 2000,
  });
  session.once("connect", () => session.setLocalWindowSize(SESSION_WINDOW));
  return new Http2Connection(session, onGone);
}

interface StreamState {
  ended: boolean;
  trailers: RawHeaders;
}

/** A class for the reason Http1UpstreamResponse is one (upstream/http1.ts): no per-object accessor. */
class H2UpstreamResponse implements UpstreamResponse {
  readonly httpVersion = "2" as const;
  readonly reason = undefined;
  readonly status: number;
  readonly headOnly: boolean;
  readonly headers: RawHeaders;

  constructor(
    readonly body: ClientHttp2Stream,
    headers: IncomingHttpHeaders,
    rawHeaders: readonly string[],
    flags: number,
    private readonly state: StreamState,
  ) {
    this.status = Number(headers[":status"] ?? 502);
    this.headOnly = (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    this.headers = withoutPseudoHeaders(rawHeaders);
  }

  get complete(): boolean {
    return this.state.ended;
  }

  trailers(): RawHeaders {
    return this.state.trailers;
  }
}

/**
 * One request as a stream on a pooled h2 session. Connection-specific headers never cross
 * (RFC 9113 8.2.2); Host becomes :authority; trailers go out as a trailing HEADERS frame.
 */
export function sendHttp2(
  connection: Http2Connection,
  settings: UpstreamSettings,
  target: Target,
  request: OutgoingRequest,
  events: UpstreamEvents,
  /** The upstream refused the stream unprocessed (RFC 9113 8.7): true when the caller sends it again instead. */
  refused?: () => boolean,
): UpstreamCall {
  const authority = getHeader(request.headers, "host") ?? formatAuthority(target.host, target.port, "https");
  const headers = toHttp2Headers(request.headers, { ":method": request.method, ":path": request.path, ":scheme": "https", ":authority": authority }, AS_PSEUDO);
  const bodyless = !request.hasBody && request.body === undefined;
  let stream: ClientHttp2Stream;
  try {
    stream = connection.session.request(headers, bodyless ? { endStream: true } : { waitForTrailers: true });
  } catch (error) {
    return failedCall(events, new ProxyError("internal_error", `cannot send to ${upstreamName(target)} over h2: ${(error as Error).message}`));
  }
  connection.active++;
  events.sent("2");
  stream.once("close", () => connection.active--);
  const state = { ended: false, trailers: [] as RawHeaders, responded: false };
  let outgoingTrailers: RawHeaders = [];
  const responseTimer = setTimeout(() => {
    events.error(new ProxyError("upstream_timeout", `${upstreamName(target)} sent no response headers within ${formatDuration(settings.responseMs)}`));
    resetStream(stream, constants.NGHTTP2_CANCEL);
  }, settings.responseMs);
  stream.once("close", () => clearTimeout(responseTimer));
  stream.on("continue", () => events.continue());
  stream.once("response", (responseHeaders: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
    clearTimeout(responseTimer);
    state.responded = true;
    events.response(new H2UpstreamResponse(stream, responseHeaders, rawHeaders, flags, state));
  });
  stream.once("trailers", (_headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => (state.trailers = withoutPseudoHeaders(rawHeaders)));
  stream.once("end", () => (state.ended = true));
  stream.on("wantTrailers", () => {
    try {
      stream.sendTrailers(toHttp2Headers(outgoingTrailers, {}));
    } catch {
      resetStream(stream, constants.NGHTTP2_INTERNAL_ERROR);
    }
  });
  /** Unprocessed and taken over by the caller: this stream says nothing more. */
  let resent = false;
  const unprocessed = (error?: NodeJS.ErrnoException) =>
    !state.responded && (stream.rstCode === constants.NGHTTP2_REFUSED_STREAM || error?.code === "ERR_HTTP2_GOAWAY_SESSION") && (resent ||= refused?.() ?? false);
  stream.on("error", (error: NodeJS.ErrnoException) => {
    clearTimeout(responseTimer);
    if (resent || unprocessed(error)) return;
    // After the head, the relay sees the broken body; before it, the client is answered.
    if (!state.responded) events.error(classifyH2Error(error, target));
  });
  stream.once("close", () => {
    if (resent || unprocessed()) {
      clearTimeout(responseTimer);
    } else if (!state.responded && stream.rstCode !== undefined && stream.rstCode !== constants.NGHTTP2_NO_ERROR) {
      events.error(new ProxyError("upstream_protocol_error", `${upstreamName(target)} reset the h2 stream (code ${stream.rstCode})`));
    }
    setImmediate(forgetListeners, stream);
  });
  return {
    // As towards clients: pause the source at 256 KiB buffered, not at the stream's 16 KiB mark.
    write: (chunk) => stream.write(chunk) || stream.writableLength < 256 * 1024,
    onDrain: (listener) => void stream.on("drain", listener),
    end(trailers) {
      if (bodyless) return;
      if (trailers?.length) outgoingTrailers = trailers;
      stream.end();
    },
    abort: () => resetStream(stream, constants.NGHTTP2_CANCEL),
  };
}

/**
 * A closed stream lets go of every listener, and so of the exchange they close over. Node keeps
 * a finished stream reachable from the old generation until the next full collection (through
 * the accessors ClientHttp2Session.request's AsyncResource.bind defines on a function, DEP0172),
 * so every young collection would otherwise copy and promote the whole exchange with it. Run
 * after every 'close' listener. Defined out here: a closure made inside sendHttp2 would hold
 * sendHttp2's scope, and the exchange with it. The error listener left keeps a late error from
 * crashing the process.
 */
function forgetListeners(stream: ClientHttp2Stream): void {
  stream.removeAllListeners();
  stream.on("error", ignoreError);
}

function ignoreError(): void {}

function classifyH2Error(error: NodeJS.ErrnoException, target: Target): ProxyError {
  if (error.code === "ERR_HTTP2_STREAM_ERROR" || error.code === "ERR_HTTP2_SESSION_ERROR" || error.code === "ERR_HTTP2_GOAWAY_SESSION") {
    return new ProxyError("upstream_protocol_error", `${upstreamName(target)} failed the h2 stream: ${error.message}`);
  }
  return classifyUpstreamError(error, upstreamName(target));
}
