import http2, { constants, type Http2Server, type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { destroyOnError } from "../../core/destroy-on-error.js";
import { runExchange } from "../../pipeline/runner.js";
import type { TransportRuntime } from "../runtime.js";
import { inboundFromHttp2 } from "./inbound.js";
import { Http2Responder } from "./responder.js";

/**
 * Flow-control windows. The 64 KiB default makes a stream wait for a WINDOW_UPDATE every
 * 64 KiB (mitmproxy measured a 17x slowdown); a stream that is not read stops at its window,
 * so this is also what one slow stream can make portcullis hold.
 */
export const STREAM_WINDOW = 1024 * 1024;
export const SESSION_WINDOW = 16 * 1024 * 1024;
/** Largest header block a client may send (SETTINGS_MAX_HEADER_LIST_SIZE); larger ones close its connection. */
const MAX_HEADER_LIST_BYTES = 64 * 1024;
/** Resets a client may send in RESET_WINDOW_MS before its connection is closed (CVE-2023-44487, rapid reset). */
const MAX_RESETS = 200;
const RESET_WINDOW_MS = 10_000;

export interface Http2Inner {
  server: Http2Server;
  /** Closes every client session: GOAWAY at once, streams in flight may finish. */
  closeSessions(): void;
  /** Destroys what is left. */
  destroySessions(): void;
  readonly sessionCount: number;
}

/** The h2 server every h2 tunnel is handed to: each stream is one exchange through the pipeline. */
export function createHttp2Server(runtime: TransportRuntime): Http2Inner {
  const server = http2.createServer({
    settings: {
      maxConcurrentStreams: runtime.state.policy.proxy.max_concurrent_streams,
      enableConnectProtocol: true,
      initialWindowSize: STREAM_WINDOW,
      maxHeaderListSize: MAX_HEADER_LIST_BYTES,
    },
    maxHeaderListPairs: 256,
    maxSessionInvalidFrames: 100,
    maxSessionRejectedStreams: 100,
  });
  const sessions = new Set<Http2Session>();
  server.on("session", (session: Http2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    guardSession(runtime, session);
  });
  server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
    // A stream's own failure ends that stream; the pipeline sees it close.
    stream.on("error", () => undefined);
    const request = inboundFromHttp2(stream, headers, rawHeaders);
    void runExchange(runtime, request, new Http2Responder(stream, request.method));
  });
  server.on("sessionError", () => undefined);
  return {
    server,
    closeSessions: () => sessions.forEach((session) => session.close()),
    destroySessions: () => sessions.forEach((session) => session.destroy()),
    get sessionCount() {
      return sessions.size;
    },
  };
}

/**
 * Per-connection limits: a client that never acknowledges SETTINGS, floods resets, or sits
 * idle is sent GOAWAY and closed; every other connection carries on.
 */
function guardSession(runtime: TransportRuntime, session: Http2Session): void {
  session.on("error", destroyOnError);
  // The session's handle is set up once its socket is; the connection window can grow from then on.
  session.once("connect", () => session.setLocalWindowSize(SESSION_WINDOW));
  const refuse = (why: string, code = constants.NGHTTP2_ENHANCE_YOUR_CALM) => {
    if (session.destroyed) return;
    runtime.diagnostics.warn({ client_addr: session.socket?.remoteAddress }, `h2 connection closed: ${why}`);
    // GOAWAY with the reason, then the connection closes once what is in flight is out; a
    // client that keeps it open anyway is cut a moment later.
    session.goaway(code);
    session.close();
    setTimeout(() => session.destroy(), 1000).unref();
  };
  const settingsTimer = setTimeout(() => refuse("the client never acknowledged SETTINGS", constants.NGHTTP2_SETTINGS_TIMEOUT), runtime.timeouts.headersMs);
  settingsTimer.unref();
  session.once("localSettings", () => clearTimeout(settingsTimer));
  session.once("close", () => clearTimeout(settingsTimer));
  const resets: number[] = [];
  let open = 0;
  session.on("stream", (stream: ServerHttp2Stream) => {
    open++;
    stream.once("close", () => open--);
    stream.once("aborted", () => {
      const now = Date.now();
      resets.push(now);
      while (resets.length && resets[0]! < now - RESET_WINDOW_MS) resets.shift();
      if (resets.length > MAX_RESETS) refuse(`more than ${MAX_RESETS} stream resets in ${RESET_WINDOW_MS / 1000} s (rapid reset)`);
    });
  });
  // Idle like an HTTP/1.1 keep-alive connection: closed with GOAWAY when nothing is open.
  session.setTimeout(runtime.timeouts.keepAliveMs, () => {
    if (open === 0 && !session.destroyed) session.close();
  });
}
