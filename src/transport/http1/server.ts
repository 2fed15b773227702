import http, { type IncomingMessage, type Server } from "node:http";
import { performance } from "node:perf_hooks";
import type { Duplex } from "node:stream";
import { destroyOnError } from "../../core/destroy-on-error.js";
import { ProxyError } from "../../core/errors.js";
import type { TunnelContext } from "../../core/exchange.js";
import { writeErrorAnswer } from "../../pipeline/answer-error.js";
import { MAX_REQUEST_TARGET, runExchange } from "../../pipeline/runner.js";
import { tunnelRecord } from "../audit.js";
import type { TransportRuntime } from "../runtime.js";
import { clientAddress, tunnelOf } from "../tunnel-context.js";
import { inboundFromHttp1 } from "./inbound.js";
import { Http1Responder } from "./server-responder.js";
import { SocketResponder } from "./socket-responder.js";

/** An HTTP/1.1 server whose every request and upgrade runs through the pipeline. */
export function createHttp1Server(runtime: TransportRuntime): Server {
  const server = http.createServer({
    // The whole request may stream for as long as it takes; only the headers are timed (slowloris).
    requestTimeout: 0,
    headersTimeout: runtime.timeouts.headersMs,
    keepAliveTimeout: runtime.timeouts.keepAliveMs,
    connectionsCheckingInterval: Math.min(30_000, Math.max(250, runtime.timeouts.headersMs / 4)),
    noDelay: true,
    // A request without Host gets portcullis' own 400, with a reason and an audit line.
    requireHostHeader: false,
  });
  const onRequest = (req: IncomingMessage, res: http.ServerResponse) => void runExchange(runtime, inboundFromHttp1(req, false), new Http1Responder(res));
  server.on("request", onRequest);
  // Without this listener Node answers Expect: 100-continue itself; the upstream should decide.
  server.on("checkContinue", onRequest);
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", destroyOnError);
    void runExchange(runtime, inboundFromHttp1(req, true), new SocketResponder(socket, head));
  });
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => onClientError(runtime, error, socket));
  return server;
}

/** A head over Node's limit: 414 when the request line alone is too long, 431 otherwise (RFC 9110 15.5.15, RFC 6585 5). */
function oversizedHead(error: NodeJS.ErrnoException & { rawPacket?: Buffer }): ProxyError {
  const packet = error.rawPacket?.toString("latin1") ?? "";
  const lineEnd = packet.indexOf("\r\n");
  if (lineEnd < 0 || lineEnd > MAX_REQUEST_TARGET) return new ProxyError("bad_request", "request URL too long", null, 414);
  return new ProxyError("bad_request", `request head over ${Math.round(http.maxHeaderSize / 1024)} KiB`, null, 431);
}

/** Malformed HTTP from a client: one 400 and one audit line, and everyone else carries on. */
function onClientError(runtime: TransportRuntime, error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === "ECONNRESET" || error.code === "EPIPE" || !socket.writable) {
    socket.destroy();
    return;
  }
  const timedOut = error.code === "ERR_HTTP_REQUEST_TIMEOUT" || error.code === "ERR_HTTP_HEADERS_TIMEOUT";
  const tunnel: TunnelContext = tunnelOf(socket) ?? { host: "", port: 0, client: null, clientAddr: clientAddress(socket) };
  const proxyError = error.code === "HPE_HEADER_OVERFLOW" ? oversizedHead(error) : new ProxyError("bad_request", timedOut ? "request headers not received in time" : `malformed HTTP request (${error.code ?? error.message})`);
  const status = writeErrorAnswer(new SocketResponder(socket), proxyError, null, runtime.scrubber.scrub);
  runtime.audit.write(
    tunnelRecord(tunnel, performance.now(), { msg: "http", method: null, status, error: { type: proxyError.type, message: proxyError.message } }),
  );
}
