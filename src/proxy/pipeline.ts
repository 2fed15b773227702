import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { TLSSocket } from "node:tls";
import { injectCredentials } from "../credentials/inject.js";
import type { AuditMessage } from "../log/audit-record.js";
import { decideRequest } from "../policy/decide.js";
import { Exchange, requestIdFrom, type Target, type TunnelContext } from "./exchange.js";
import { forwardHttp } from "./forward.js";
import { ProxyError } from "./proxy-error.js";
import { answerError, answerErrorOnSocket, recordError, toProxyError } from "./respond.js";
import { rewriteRequest, type OutgoingRequest } from "./rewrite.js";
import { forwardUpgrade } from "./upgrade.js";
import type { PolicyState, Runtime } from "./runtime.js";
import { parseAbsoluteForm, pathInTunnel } from "./target.js";

interface Located {
  tunnel: TunnelContext;
  target: Target;
  path: string;
  /** The Host an absolute-form request is sent with; inside a tunnel the client's own Host stays. */
  hostHeader: string | undefined;
}

export function clientAddress(socket: Socket | Duplex): string {
  const raw = (socket as TLSSocket).remoteAddress !== undefined ? (socket as Socket) : undefined;
  return raw?.remoteAddress ? `${raw.remoteAddress}:${raw.remotePort}` : "unknown";
}

/** Where a request goes: the CONNECT authority of its tunnel, or the URL of an absolute-form request. */
function locate(runtime: Runtime, req: IncomingMessage): Located {
  const tunnel = runtime.tunnels.get(req.socket);
  if (tunnel) {
    const target: Target = { scheme: req.socket instanceof TLSSocket ? "https" : "http", host: tunnel.host, port: tunnel.port };
    return { tunnel, target, path: pathInTunnel(req.url ?? "/", req.headers.host, target), hostHeader: undefined };
  }
  const absolute = parseAbsoluteForm(req.url ?? "");
  if (!absolute) {
    throw new ProxyError("bad_request", "portcullis is a proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port");
  }
  const { host, port } = absolute.target;
  return {
    tunnel: { host, port, client: null, clientAddr: clientAddress(req.socket) },
    target: absolute.target,
    path: absolute.path,
    hostHeader: absolute.authority,
  };
}

function openExchange(runtime: Runtime, req: IncomingMessage): { exchange: Exchange; located?: Located; error?: ProxyError } {
  const requestId = requestIdFrom(req.headers["x-request-id"] as string | undefined);
  try {
    const located = locate(runtime, req);
    const exchange = new Exchange(requestId, located.tunnel, located.target, req.method ?? "GET", located.path, req.rawHeaders);
    return { exchange, located };
  } catch (error) {
    const tunnel = runtime.tunnels.get(req.socket) ?? { host: "", port: 0, client: null, clientAddr: clientAddress(req.socket) };
    const target: Target = { scheme: req.socket instanceof TLSSocket ? "https" : "http", host: tunnel.host, port: tunnel.port };
    const exchange = new Exchange(requestId, tunnel, target, req.method ?? "GET", req.url ?? "", req.rawHeaders);
    return { exchange, error: toProxyError(error) };
  }
}

/** rewrite -> credentials -> policy: everything before the request leaves. Throws the ProxyError that answers it. */
async function prepare(req: IncomingMessage, exchange: Exchange, located: Located, state: PolicyState, upgrade: boolean): Promise<OutgoingRequest> {
  const outgoing = rewriteRequest(req, exchange, located.path, located.hostHeader, upgrade);
  await injectCredentials(exchange, outgoing, state);
  const decision = decideRequest(exchange, outgoing, state);
  exchange.decision = decision.action;
  exchange.rule = decision.rule;
  exchange.reason = decision.reason;
  if (decision.action === "deny") throw new ProxyError("policy_denied", decision.reason, decision.rule);
  return outgoing;
}

function writeAudit(runtime: Runtime, exchange: Exchange, msg: AuditMessage): void {
  if (!exchange.claimAuditLine()) return;
  runtime.audit.write(exchange.toRecord(exchange.decision === "deny" ? "denied" : msg));
}

function reportInternal(runtime: Runtime, error: unknown, exchange: Exchange): void {
  if (!(error instanceof ProxyError)) runtime.diagnostics.error({ err: error, req_id: exchange.requestId }, "internal error in the pipeline");
}

/** An HTTP exchange: the full pipeline, then one audit line when the response is over. */
export async function handleRequest(runtime: Runtime, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const state = runtime.state;
  const { exchange, located, error } = openExchange(runtime, req);
  res.once("close", () => {
    if (res.headersSent) exchange.status = res.statusCode;
    if (!res.writableFinished && !exchange.error) {
      exchange.error = { type: "client_closed", message: "client closed the connection before the response ended" };
    }
    writeAudit(runtime, exchange, "http");
  });
  if (error || !located) {
    answerError(res, exchange, error ?? new ProxyError("bad_request", "malformed request"));
    return;
  }
  try {
    const outgoing = await prepare(req, exchange, located, state, false);
    forwardHttp(exchange, req, res, outgoing, state);
  } catch (caught) {
    reportInternal(runtime, caught, exchange);
    answerError(res, exchange, toProxyError(caught));
  }
}

/** An upgrade handshake (WebSocket or other): the same stages, then the upstream decides. */
export async function handleUpgrade(runtime: Runtime, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const state = runtime.state;
  const { exchange, located, error } = openExchange(runtime, req);
  const isWebSocket = String(req.headers.upgrade ?? "").toLowerCase() === "websocket";
  const finish = () => writeAudit(runtime, exchange, isWebSocket && exchange.status === 101 ? "websocket" : "http");
  socket.on("error", () => socket.destroy());
  const refuse = (proxyError: ProxyError) => {
    recordError(exchange, proxyError);
    exchange.status = answerErrorOnSocket(socket, proxyError, exchange.requestId);
    finish();
  };
  if (error || !located) {
    refuse(error ?? new ProxyError("bad_request", "malformed request"));
    return;
  }
  try {
    const outgoing = await prepare(req, exchange, located, state, true);
    forwardUpgrade(exchange, req, socket, head, outgoing, state, finish);
  } catch (caught) {
    reportInternal(runtime, caught, exchange);
    refuse(toProxyError(caught));
  }
}
