import http, { type IncomingMessage, type Server } from "node:http";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import type { Duplex } from "node:stream";
import type { TunnelContext } from "./exchange.js";
import { passthroughTunnel, tunnelRecord } from "./passthrough.js";
import { decideTunnel } from "../policy/decide.js";
import { anyHostMatches } from "../policy/hosts.js";
import { authenticate, clientAddress, handleRequest, handleUpgrade } from "./pipeline.js";
import { ProxyError } from "./proxy-error.js";
import { answerErrorOnSocket } from "./respond.js";
import type { Runtime } from "./runtime.js";
import { parseConnectAuthority } from "./target.js";
import { interceptTunnel } from "./tunnel.js";

function createHttpServer(runtime: Runtime): Server {
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
  server.on("request", (req, res) => void handleRequest(runtime, req, res));
  // Without this listener Node answers Expect: 100-continue itself; the upstream should decide.
  server.on("checkContinue", (req, res) => void handleRequest(runtime, req, res));
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => void handleUpgrade(runtime, req, socket, head));
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => onClientError(runtime, error, socket));
  return server;
}

/** Malformed HTTP from a client: one 400 and one audit line, and everyone else carries on. */
function onClientError(runtime: Runtime, error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === "ECONNRESET" || error.code === "EPIPE" || !socket.writable) {
    socket.destroy();
    return;
  }
  const timedOut = error.code === "ERR_HTTP_REQUEST_TIMEOUT" || error.code === "ERR_HTTP_HEADERS_TIMEOUT";
  const tunnel: TunnelContext = runtime.tunnels.get(socket as Socket) ?? { host: "", port: 0, client: null, clientAddr: clientAddress(socket) };
  const proxyError = new ProxyError("bad_request", timedOut ? "request headers not received in time" : `malformed HTTP request (${error.code ?? error.message})`);
  const status = answerErrorOnSocket(socket, proxyError, null, runtime.scrubber.scrub);
  runtime.audit.write(
    tunnelRecord(tunnel, performance.now(), { msg: "http", method: null, status, error: { type: proxyError.type, message: proxyError.message } }),
  );
}

export interface ProxyServers {
  listener: Server;
  inner: Server;
}

/**
 * The listening server takes CONNECT and absolute-form requests; the one inner server serves
 * every intercepted tunnel. No loopback hop, no server per host.
 */
export function createServers(runtime: Runtime): ProxyServers {
  const inner = createHttpServer(runtime);
  // The inner server never listens on a port: connections reach it by emit("connection").
  // Node arms header timeouts and idle-connection tracking on "listening", so it is announced here.
  inner.emit("listening");
  const listener = createHttpServer(runtime);
  listener.on("connect", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    onConnect(runtime, inner, req, socket, head).catch((error: unknown) => {
      runtime.diagnostics.error({ err: error }, "tunnel failed");
      socket.destroy();
    });
  });
  return { listener, inner };
}

/** Answers a CONNECT with a SPEC error and writes its one audit line. */
function refuseConnect(runtime: Runtime, socket: Socket, tunnel: TunnelContext, startedAt: number, error: ProxyError): void {
  const status = answerErrorOnSocket(socket, error, null, runtime.scrubber.scrub);
  const denied = error.type === "policy_denied" || error.type === "proxy_auth_required";
  runtime.audit.write(
    tunnelRecord(tunnel, startedAt, {
      msg: denied ? "denied" : "tunnel",
      status,
      decision: denied ? "deny" : "allow",
      rule: error.rule,
      reason: denied ? error.message : null,
      error: { type: error.type, message: error.message },
    }),
  );
}

/** CONNECT: authority, identity, host-level policy, then passthrough or interception. */
async function onConnect(runtime: Runtime, inner: Server, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  const startedAt = performance.now();
  socket.setNoDelay(true);
  socket.on("error", () => socket.destroy());
  const state = runtime.state;
  const clientAddr = clientAddress(socket);
  const authority = parseConnectAuthority(req.url ?? "");
  if (!authority) {
    const error = new ProxyError("bad_request", `CONNECT needs host:port, got "${(req.url ?? "").slice(0, 100)}"`);
    refuseConnect(runtime, socket, { host: "", port: 0, client: null, clientAddr }, startedAt, error);
    return;
  }
  const tunnel: TunnelContext = { host: authority.host, port: authority.port, client: null, clientAddr };
  try {
    tunnel.client = await authenticate(state, req);
  } catch (error) {
    refuseConnect(runtime, socket, tunnel, startedAt, error as ProxyError);
    return;
  }
  const decision = decideTunnel(state, tunnel.host, tunnel.port, tunnel.client);
  if (decision.action === "deny") {
    refuseConnect(runtime, socket, tunnel, startedAt, new ProxyError("policy_denied", decision.reason, decision.rule));
    return;
  }
  socket.once("close", runtime.metrics.tunnelOpened());
  if (anyHostMatches(state.passthrough, tunnel.host)) {
    passthroughTunnel(runtime, tunnel, socket, head);
    return;
  }
  await interceptTunnel(runtime, inner, tunnel, socket, head);
}
