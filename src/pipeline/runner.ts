import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { TLSSocket } from "node:tls";
import { injectCredentials, planCredentials } from "../credentials/inject.js";
import { bodyNeedsReading, checkPlaceholderHosts, findPlaceholders, readBody, substitutePlaceholders } from "../credentials/placeholders.js";
import type { AuditMessage } from "../log/audit-record.js";
import { decideRequest } from "../policy/decide.js";
import { llmRulesFor } from "../llm/evaluate.js";
import type { LlmRule } from "../policy/schema.js";
import { removeHeaders, restrictAcceptEncoding } from "./raw-headers.js";
import { Exchange, requestIdFrom, type Target, type TunnelContext } from "./exchange.js";
import { bodySampler, forwardHttp } from "./forward.js";
import { ProxyError } from "./proxy-error.js";
import { answerError, answerErrorOnSocket, recordError, toProxyError } from "./respond.js";
import { rewriteRequest, type OutgoingRequest } from "./rewrite.js";
import { forwardUpgrade } from "./upgrade.js";
import { headerMap, requestInfo, runHooks, type Hooks, type RequestContext } from "./hooks.js";
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
async function locate(runtime: Runtime, req: IncomingMessage): Promise<Located> {
  const tunnel = runtime.tunnels.get(req.socket);
  if (tunnel) {
    const target: Target = { scheme: req.socket instanceof TLSSocket ? "https" : "http", host: tunnel.host, port: tunnel.port };
    // Two Host headers could route differently upstream than the one checked here.
    if ((req.headersDistinct.host?.length ?? 0) > 1) throw new ProxyError("bad_request", "request has more than one Host header");
    return { tunnel, target, path: pathInTunnel(req.url ?? "/", req.headers.host, target), hostHeader: undefined };
  }
  const absolute = parseAbsoluteForm(req.url ?? "");
  if (!absolute) {
    throw new ProxyError("bad_request", "portcullis is a proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port");
  }
  const { host, port } = absolute.target;
  const client = await authenticate(runtime.state, req);
  return {
    tunnel: { host, port, client, clientAddr: clientAddress(req.socket) },
    target: absolute.target,
    path: absolute.path,
    hostHeader: absolute.authority,
  };
}

/** The identity a Proxy-Authorization header proves; throws 407 when the policy requires one and it does not. */
export async function authenticate(state: PolicyState, req: IncomingMessage): Promise<string | null> {
  const result = await state.identities.authenticate(req.headers["proxy-authorization"]);
  if (!result.ok) throw new ProxyError("proxy_auth_required", `proxy authentication failed: ${result.reason}`);
  return result.client;
}

async function openExchange(runtime: Runtime, req: IncomingMessage): Promise<{ exchange: Exchange; located?: Located; error?: ProxyError }> {
  const requestId = requestIdFrom(req.headers["x-request-id"] as string | undefined);
  try {
    const located = await locate(runtime, req);
    const exchange = new Exchange(requestId, located.tunnel, located.target, req.method ?? "GET", located.path, req.rawHeaders, runtime.scrubber.scrub);
    return { exchange, located };
  } catch (error) {
    const absolute = runtime.tunnels.has(req.socket) ? undefined : parseAbsoluteForm(req.url ?? "");
    const tunnel = runtime.tunnels.get(req.socket) ?? {
      host: absolute?.target.host ?? "",
      port: absolute?.target.port ?? 0,
      client: null,
      clientAddr: clientAddress(req.socket),
    };
    const target: Target = absolute?.target ?? { scheme: req.socket instanceof TLSSocket ? "https" : "http", host: tunnel.host, port: tunnel.port };
    const exchange = new Exchange(requestId, tunnel, target, req.method ?? "GET", req.url ?? "", req.rawHeaders, runtime.scrubber.scrub);
    return { exchange, error: toProxyError(error) };
  }
}

/** A body the placeholder stage must see is read before anything is decided (text, at most 64 KiB). */
async function readBodyFirst(req: IncomingMessage, exchange: Exchange, outgoing: OutgoingRequest, state: PolicyState, writeContinue?: () => void): Promise<void> {
  // A client waiting for 100 Continue sends nothing until it gets one: give it, or we wait forever.
  if (String(req.headers.expect ?? "").toLowerCase() === "100-continue") {
    writeContinue?.();
    outgoing.headers = removeHeaders(outgoing.headers, new Set(["expect"]));
  }
  outgoing.body = await readBody(req);
  exchange.reqBytes = outgoing.body.length;
  const sample = bodySampler(req, state);
  sample?.add(outgoing.body);
  exchange.reqBody = sample?.text();
}

/**
 * rewrite -> credentials -> policy, everything before the request leaves; throws the
 * ProxyError that answers it. The credential stage picks the credentials that apply, the
 * policy stage decides, and only an allowed request has its secrets resolved and put on.
 */
async function prepare(
  req: IncomingMessage,
  exchange: Exchange,
  located: Located,
  state: PolicyState,
  upgrade: boolean,
  hooks: readonly Hooks[],
  writeContinue?: () => void,
): Promise<OutgoingRequest> {
  const outgoing = rewriteRequest(req, exchange, located.path, located.hostHeader, upgrade);
  const normalisedPath = exchange.normalisedPath;
  // The empty-policy checks below skip an async step per stage that would do nothing.
  const credentials = state.policy.credentials.length ? planCredentials(state, exchange.target.host, normalisedPath) : [];
  if (bodyNeedsReading(state, req)) await readBodyFirst(req, exchange, outgoing, state, writeContinue);
  const placeholders = state.policy.placeholders.length ? findPlaceholders(state, outgoing) : [];

  const llmRules = state.policy.llm.length ? llmRulesFor(state.policy, exchange.target.host, normalisedPath) : [];

  checkPlaceholderHosts(placeholders, exchange);
  const decision = decideRequest(exchange, state);
  exchange.decision = decision.action;
  exchange.rule = decision.rule;
  exchange.reason = decision.reason;
  if (decision.action === "deny") throw new ProxyError("policy_denied", decision.reason, decision.rule);
  if (upgrade) refuseUninspectableUpgrade(llmRules, exchange);
  if (hooks.length) await runRequestHooks(hooks, exchange, outgoing, upgrade);

  if (credentials.length) await injectCredentials(credentials, exchange, outgoing, state);
  if (placeholders.length) await substitutePlaceholders(placeholders, exchange, outgoing, state);
  if (exchange.injectedSecrets.length || llmRules.length) {
    outgoing.headers = restrictAcceptEncoding(outgoing.headers);
  }
  return outgoing;
}

/** A WebSocket to a host under an llm rule would carry tool calls no one judges: fail closed unless the rule allows it. */
function refuseUninspectableUpgrade(llmRules: readonly LlmRule[], exchange: Exchange): void {
  const rule = llmRules.find((candidate) => !candidate.allow_websocket);
  if (!rule) return;
  throw new ProxyError(
    "policy_denied",
    `WebSocket sessions to ${exchange.target.host} are not inspected for tool calls, so llm rule ${rule.name} refuses them (set allow_websocket: true on the rule to allow)`,
    rule.name,
  );
}

/** onRequest / onWebSocket hooks: they see the request the policy allowed, before any secret is on it. */
async function runRequestHooks(hooks: readonly Hooks[], exchange: Exchange, outgoing: OutgoingRequest, webSocket: boolean): Promise<void> {
  let denial: string | undefined;
  const ctx: RequestContext = {
    ...requestInfo(exchange),
    get path() {
      return outgoing.path;
    },
    set path(value: string) {
      outgoing.path = value;
    },
    headers: headerMap(
      () => outgoing.headers,
      (headers) => (outgoing.headers = headers),
    ),
    webSocket,
    deny: (reason) => (denial ??= reason),
  };
  const stage = webSocket ? "onWebSocket" : "onRequest";
  try {
    await runHooks(hooks, (set) => (webSocket ? set.onWebSocket : set.onRequest), ctx);
  } catch (error) {
    // A hook that fails cannot vouch for the request: it is refused.
    throw new ProxyError("policy_denied", `${stage} hook failed: ${(error as Error).message}`, `hook:${stage}`);
  }
  if (denial !== undefined) throw new ProxyError("policy_denied", denial, `hook:${stage}`);
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
  const { exchange, located, error } = await openExchange(runtime, req);
  const clientGone = () => {
    exchange.error ??= { type: "client_closed", message: "client closed the connection before the response ended" };
  };
  if (res.destroyed) {
    // Gone while its identity was being checked: 'close' has already passed, so log it here.
    clientGone();
    writeAudit(runtime, exchange, "http");
    return;
  }
  res.once("close", () => {
    if (res.headersSent) exchange.status = res.statusCode;
    if (!res.writableFinished) clientGone();
    writeAudit(runtime, exchange, "http");
  });
  if (error || !located) {
    answerError(res, exchange, error ?? new ProxyError("bad_request", "malformed request"));
    return;
  }
  try {
    const outgoing = await prepare(req, exchange, located, state, false, runtime.hooks, () => res.writeContinue());
    // A client that left while secrets were resolved gets nothing sent upstream on its behalf.
    if (res.destroyed) return;
    forwardHttp(exchange, req, res, outgoing, state, runtime.hooks);
  } catch (caught) {
    reportInternal(runtime, caught, exchange);
    answerError(res, exchange, toProxyError(caught));
  }
}

/** An upgrade handshake (WebSocket or other): the same stages, then the upstream decides. */
export async function handleUpgrade(runtime: Runtime, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const state = runtime.state;
  const { exchange, located, error } = await openExchange(runtime, req);
  const isWebSocket = String(req.headers.upgrade ?? "").toLowerCase() === "websocket";
  const finish = () => writeAudit(runtime, exchange, isWebSocket && exchange.status === 101 ? "websocket" : "http");
  socket.on("error", () => socket.destroy());
  const goneAlready = () => {
    if (!socket.destroyed) return false;
    exchange.error ??= { type: "client_closed", message: "client closed the connection during the handshake" };
    finish();
    return true;
  };
  if (goneAlready()) return;
  const refuse = (proxyError: ProxyError) => {
    recordError(exchange, proxyError);
    exchange.status = answerErrorOnSocket(socket, proxyError, exchange.requestId, exchange.scrub);
    finish();
  };
  if (error || !located) {
    refuse(error ?? new ProxyError("bad_request", "malformed request"));
    return;
  }
  if (Number(req.headers["content-length"] ?? 0) > 0 || req.headers["transfer-encoding"] !== undefined) {
    refuse(new ProxyError("bad_request", "an upgrade request cannot carry a body"));
    return;
  }
  try {
    const outgoing = await prepare(req, exchange, located, state, true, runtime.hooks);
    if (goneAlready()) return;
    forwardUpgrade(exchange, req, socket, head, outgoing, state, finish, () => runtime.metrics.webSocketOpened());
  } catch (caught) {
    reportInternal(runtime, caught, exchange);
    refuse(toProxyError(caught));
  }
}
