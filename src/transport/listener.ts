import type { IncomingMessage, Server } from "node:http";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { destroyOnError } from "../core/destroy-on-error.js";
import { ProxyError } from "../core/errors.js";
import type { TunnelContext } from "../core/exchange.js";
import { writeErrorAnswer } from "../pipeline/answer-error.js";
import { authenticate } from "../pipeline/runner.js";
import { parseConnectAuthority } from "../pipeline/target.js";
import { decideTunnel } from "../policy/decide.js";
import { anyHostMatches } from "../policy/hosts.js";
import { tunnelRecord } from "./audit.js";
import { createHttp1Server } from "./http1/server.js";
import { createHttp2Server } from "./http2/server.js";
import { SocketResponder } from "./http1/socket-responder.js";
import { passthroughTunnel } from "./passthrough.js";
import type { TransportRuntime } from "./runtime.js";
import { clientAddress } from "./tunnel-context.js";
import { interceptTunnel, type InnerServers } from "./tunnel.js";

export interface ProxyServers extends InnerServers {
  listener: Server;
}

/**
 * The listening server takes CONNECT and absolute-form requests; one inner server per
 * protocol serves every intercepted tunnel. No loopback hop, no server per host.
 */
export function createServers(runtime: TransportRuntime): ProxyServers {
  const http1 = createHttp1Server(runtime);
  // The inner server never listens on a port: connections reach it by emit("connection").
  // Node arms header timeouts and idle-connection tracking on "listening", so it is announced here.
  http1.emit("listening");
  const inner: InnerServers = { http1, http2: runtime.state.policy.proxy.http2 ? createHttp2Server(runtime) : undefined };
  const listener = createHttp1Server(runtime);
  listener.on("connect", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    onConnect(runtime, inner, req, socket, head).catch((error: unknown) => {
      runtime.diagnostics.error({ err: error }, "tunnel failed");
      socket.destroy();
    });
  });
  return { listener, ...inner };
}

/** Answers a CONNECT with a SPEC error and writes its one audit line. */
function refuseConnect(runtime: TransportRuntime, socket: Socket, tunnel: TunnelContext, startedAt: number, error: ProxyError): void {
  const status = writeErrorAnswer(new SocketResponder(socket), error, null, runtime.scrubber.scrub, true);
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
async function onConnect(runtime: TransportRuntime, inner: InnerServers, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  const startedAt = performance.now();
  socket.setNoDelay(true);
  socket.on("error", destroyOnError);
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
    tunnel.client = await authenticate(state, req.headers["proxy-authorization"]);
  } catch (error) {
    refuseConnect(runtime, socket, tunnel, startedAt, error as ProxyError);
    return;
  }
  const unrecordable = runtime.audit.refusal("tunnels");
  if (unrecordable) {
    refuseConnect(runtime, socket, tunnel, startedAt, unrecordable);
    return;
  }
  if (tunnel.client !== null) runtime.clientConnections?.track(tunnel.client, socket);
  // Decided after tracking: a client revoked while it authenticated is refused here, not missed.
  const decision = decideTunnel(state, tunnel.host, tunnel.port, tunnel.client);
  if (decision.action === "deny") {
    refuseConnect(runtime, socket, tunnel, startedAt, new ProxyError("policy_denied", decision.reason, decision.rule));
    return;
  }
  runtime.metrics.countTunnel(socket);
  if (anyHostMatches(state.passthrough, tunnel.host)) {
    passthroughTunnel(runtime, tunnel, socket, head);
    return;
  }
  await interceptTunnel(runtime, inner, tunnel, socket, head);
}
