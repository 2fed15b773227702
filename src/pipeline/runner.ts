import type { Readable } from "node:stream";
import { ProxyError, toProxyError } from "../core/errors.js";
import { Exchange, requestIdFrom, type TunnelContext } from "../core/exchange.js";
import { getHeader, removeHeaders, setHeader } from "../core/headers.js";
import type { InboundRequest, OutgoingRequest, Responder, Target } from "../core/messages.js";
import type { AuditMessage } from "../core/audit-record.js";
import { pathEncodingProblem, pathReadings } from "../policy/paths.js";
import { answerError } from "./answer-error.js";
import type { PipelineRuntime, PolicyState } from "./context.js";
import { bodySampler, forward } from "./forward.js";
import { sendWhole } from "./relay-response.js";
import type { Flow } from "./stage.js";
import { activeStages } from "./active-stages.js";
import { parseAbsoluteForm, pathInTunnel } from "./target.js";

interface Located {
  tunnel: TunnelContext;
  target: Target;
  path: string;
  /** The Host the request is sent with when it is not the client's own. */
  hostHeader: string | undefined;
}

/** The identity a Proxy-Authorization header proves; throws 407 when the policy requires one and it does not. */
export async function authenticate(state: PolicyState, proxyAuthorization: string | undefined): Promise<string | null> {
  const result = await state.identities.authenticate(proxyAuthorization);
  if (!result.ok) throw new ProxyError("proxy_auth_required", `proxy authentication failed: ${result.reason}`);
  return result.client;
}

/** A longer request target is refused with 414 (servers differ in what they take; 8 KiB is the common floor). */
export const MAX_REQUEST_TARGET = 8 * 1024;

/**
 * Where a request goes: the CONNECT authority of its tunnel (known at once), or the URL of an
 * absolute-form request (once its proxy credentials are checked).
 */
function locate(state: PolicyState, request: InboundRequest): Located | Promise<Located> {
  if (request.target.length > MAX_REQUEST_TARGET) throw new ProxyError("bad_request", `request URL over ${MAX_REQUEST_TARGET / 1024} KiB`, null, 414);
  const { tunnel } = request;
  if (tunnel) {
    const target: Target = { scheme: request.secure ? "https" : "http", host: tunnel.host, port: tunnel.port };
    // Two Host headers (or a Host other than :authority) could route differently upstream than the one checked here.
    if (request.authorities.length > 1) throw new ProxyError("bad_request", "request has more than one Host header");
    const path = pathInTunnel(request.target, request.authorities[0], target);
    // h2 carries the authority in :authority; an HTTP/1.1 upstream needs it as Host.
    const hostHeader = getHeader(request.headers, "host") === undefined ? request.authorities[0] : undefined;
    return { tunnel, target, path, hostHeader };
  }
  const absolute = parseAbsoluteForm(request.target);
  if (!absolute) {
    throw new ProxyError("bad_request", "portcullis is a proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port");
  }
  const { host, port } = absolute.target;
  return authenticate(state, getHeader(request.headers, "proxy-authorization")).then((client) => ({
    tunnel: { host, port, client, clientAddr: request.clientAddr },
    target: absolute.target,
    path: absolute.path,
    hostHeader: absolute.authority,
  }));
}

interface Opened {
  exchange: Exchange;
  located?: Located;
  error?: ProxyError;
}

/** The exchange for a request: synchronous inside a tunnel (the hot path), after authentication on the listener. */
function openExchange(state: PolicyState, request: InboundRequest, scrub: (text: string) => string): Opened | Promise<Opened> {
  const requestId = requestIdFrom(getHeader(request.headers, "x-request-id"));
  const opened = (located: Located): Opened => {
    const encoding = pathEncodingProblem(located.path);
    if (encoding) throw new ProxyError("bad_request", encoding);
    const exchange = new Exchange(requestId, located.tunnel, located.target, request.method, located.path, request.headers, request.httpVersion, scrub);
    exchange.pathReadings = pathReadings(located.path);
    return { exchange, located };
  };
  const failed = (error: unknown): Opened => {
    const absolute = request.tunnel ? undefined : parseAbsoluteForm(request.target);
    const tunnel = request.tunnel ?? { host: absolute?.target.host ?? "", port: absolute?.target.port ?? 0, client: null, clientAddr: request.clientAddr };
    const target: Target = absolute?.target ?? { scheme: request.secure ? "https" : "http", host: tunnel.host, port: tunnel.port };
    const exchange = new Exchange(requestId, tunnel, target, request.method, request.target, request.headers, request.httpVersion, scrub);
    return { exchange, error: toProxyError(error) };
  };
  try {
    const located = locate(state, request);
    if (located instanceof Promise) return located.then(opened).catch(failed);
    return opened(located);
  } catch (error) {
    return failed(error);
  }
}

/** The most of a request body the runner holds in memory for the stages to read (flow.readBody). */
export const MAX_READ_BODY_BYTES = 10 * 1024 * 1024;

/** The first `limit` bytes of a body (all of it if it is shorter); the stream is left paused after them. */
function readStart(body: Readable, limit: number): Promise<{ data: Buffer; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      body.off("data", onData);
      body.off("end", onEnd);
      body.off("error", onError);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (size < limit) return;
      body.pause();
      done();
      resolve({ data: Buffer.concat(chunks), ended: false });
    };
    const onEnd = () => {
      done();
      resolve({ data: Buffer.concat(chunks), ended: true });
    };
    const onError = (error: Error) => {
      done();
      reject(error);
    };
    body.on("data", onData);
    body.on("end", onEnd);
    body.on("error", onError);
  });
}

/** A body a stage must see is read before anything is decided (bounded: MAX_READ_BODY_BYTES). */
async function readBodyFirst(flow: Flow, responder: Responder): Promise<void> {
  const { request, outgoing, exchange } = flow;
  // A client waiting for 100 Continue sends nothing until it gets one: give it, or we wait forever.
  if (getHeader(request.headers, "expect")?.toLowerCase() === "100-continue") {
    responder.writeContinue();
    outgoing.headers = removeHeaders(outgoing.headers, new Set(["expect"]));
  }
  if (flow.readBody) {
    // Whole, or refused: a body over the limit cannot be checked before it is forwarded.
    const whole = await readStart(request.body, MAX_READ_BODY_BYTES + 1);
    if (!whole.ended) throw new ProxyError("bad_request", `request body over ${MAX_READ_BODY_BYTES} bytes cannot be checked before it is forwarded`);
    outgoing.body = whole.data;
  } else {
    const start = await readStart(request.body, flow.readBodyStart!);
    outgoing.body = start.data;
    outgoing.bodyContinues = !start.ended;
  }
  exchange.reqBytes = outgoing.body.length;
  const sample = bodySampler(request, flow.state.policy);
  sample?.add(outgoing.body);
  exchange.reqBody = sample?.text();
}

/**
 * Runs one request phase for every stage in order; awaits only the hooks that return a promise.
 * A stage that answered the request itself (flow.answer) ends the phase.
 */
function runPhase(flow: Flow, phase: "request" | "beforeForward", from = 0): Promise<void> | undefined {
  const { stages } = flow;
  for (let i = from; i < stages.length; i++) {
    const pending = stages[i]![phase]?.(flow);
    // The rest of the phase waits for a hook that is busy; none busy, none awaited.
    if (pending) return pending.then(() => (flow.answer ? undefined : runPhase(flow, phase, i + 1)));
    if (flow.answer) return undefined;
  }
  return undefined;
}

/** A stage's own answer (flow.answer): through the response phase to the client; nothing is forwarded. */
function answerItself(flow: Flow, responder: Responder): void {
  const answer = flow.answer!;
  let headers = setHeader(answer.headers, "X-Request-Id", flow.exchange.requestId);
  headers = setHeader(headers, "Content-Length", String(answer.body.length));
  sendWhole(flow, responder, { ...answer, headers });
}

function writeAudit(runtime: PipelineRuntime, exchange: Exchange, msg: AuditMessage, paid: () => void): void {
  if (!exchange.claimAuditLine()) return;
  const write = () => (runtime.audit.write(exchange.toRecord(exchange.decision === "deny" ? "denied" : msg)), paid());
  // Usage read from a compressed body may finish a moment after the response did.
  if (exchange.auditAfter) void exchange.auditAfter.then(write, write);
  else write();
}

/**
 * One exchange, whichever protocol carried it: located, taken through the stage list,
 * forwarded, and written as exactly one audit line when it is over (for a WebSocket, when the
 * session ends).
 */
export async function runExchange(runtime: PipelineRuntime, request: InboundRequest, responder: Responder): Promise<void> {
  const state = runtime.state;
  // Owed from here, so a drain that cuts this exchange (even while it authenticates) waits for its line.
  const paid = runtime.audit.owed.add();
  const opening = openExchange(state, request, runtime.scrubber.scrub);
  const { exchange, located, error } = opening instanceof Promise ? await opening : opening;
  const upgrade = request.upgrade !== undefined;
  const webSocket = request.upgrade?.toLowerCase() === "websocket";
  let session = false;
  const finish = () => writeAudit(runtime, exchange, session && webSocket ? "websocket" : "http", paid);
  const clientGone = () => {
    exchange.error ??= {
      type: "client_closed",
      message: upgrade ? "client closed the connection during the handshake" : "client closed the connection before the response ended",
    };
  };
  if (responder.destroyed) {
    // Gone while its identity was being checked: its close has already passed, so log it here.
    clientGone();
    finish();
    return;
  }
  responder.onClose(() => {
    if (session) return;
    if (responder.statusSent !== undefined) exchange.status = responder.statusSent;
    if (!responder.finished) clientGone();
    finish();
  });
  if (error || !located) {
    answerError(responder, exchange, error ?? new ProxyError("bad_request", "malformed request"));
    return;
  }
  // Fail closed: what cannot be recorded is not run (the outage's diagnostics say why; /readyz reports it).
  const unrecordable = runtime.audit.refusal("requests");
  if (unrecordable) {
    answerError(responder, exchange, unrecordable);
    return;
  }
  if (upgrade && request.hasBody) {
    answerError(responder, exchange, new ProxyError("bad_request", "an upgrade request cannot carry a body"));
    return;
  }
  // An offer to switch to h2c may be ignored (RFC 9110 7.8): the request goes on as plain
  // HTTP/1.1, its Upgrade and HTTP2-Settings dropped as hop-by-hop (curl --http2 sends one).
  const h2cOffer = upgrade && request.upgrade!.trim().toLowerCase() === "h2c";
  // After another protocol's switch (a token list a server reads as websocket, say) the bytes
  // would pass unjudged and unscrubbed: only a WebSocket handshake is relayed.
  if (upgrade && !webSocket && !h2cOffer) {
    answerError(responder, exchange, new ProxyError("bad_request", `portcullis relays WebSocket upgrades only (Upgrade: ${JSON.stringify(request.upgrade?.slice(0, 80))})`));
    return;
  }
  const outgoing: OutgoingRequest = { method: request.method, path: located.path, headers: request.headers, hasBody: request.hasBody, upgrade: h2cOffer ? undefined : request.upgrade };
  const flow: Flow = { exchange, request, outgoing, state, hooks: runtime.hooks, stages: activeStages(state), hostHeader: located.hostHeader, upgrade: upgrade && !h2cOffer, readBody: false, notes: {} };
  try {
    for (const stage of flow.stages) stage.requestHeaders?.(flow);
    if (flow.readBody || flow.readBodyStart) await readBodyFirst(flow, responder);
    const judging = runPhase(flow, "request");
    if (judging) await judging;
    if (flow.answer) {
      if (!responder.destroyed) answerItself(flow, responder);
      return;
    }
    const preparing = runPhase(flow, "beforeForward");
    if (preparing) await preparing;
    // A client that left while secrets were resolved gets nothing sent upstream on its behalf.
    if (responder.destroyed) return;
    forward(flow, responder, {
      metrics: runtime.metrics,
      sessionStarted: () => (session = true),
      sessionEnded: finish,
      internalError: (caught, where) => {
        if (!(caught instanceof ProxyError)) runtime.diagnostics.error({ err: caught, req_id: exchange.requestId, where }, "internal error in the pipeline");
      },
    });
  } catch (caught) {
    if (!(caught instanceof ProxyError)) runtime.diagnostics.error({ err: caught, req_id: exchange.requestId }, "internal error in the pipeline");
    answerError(responder, exchange, toProxyError(caught));
  }
}
