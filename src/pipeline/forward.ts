import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import { isIP } from "node:net";
import { pipeline, type Readable } from "node:stream";
import { BodySample, isTextContentType } from "../log/body-sample.js";
import { formatDuration } from "../policy/duration.js";
import type { Exchange } from "./exchange.js";
import { planResponse, type Answer, type BufferPlan } from "./modify-response.js";
import { scrubHeaderValues } from "../credentials/echo-scrub.js";
import { headerMap, requestInfo, runHooks, type Hooks, type ResponseContext } from "./hooks.js";
import { classifyUpstreamError, ProxyError } from "./proxy-error.js";
import { DestinationDenied } from "../policy/destinations.js";
import { getHeader, removeHeaders, type RawHeaders } from "./raw-headers.js";
import { answerError } from "./respond.js";
import type { OutgoingRequest } from "./rewrite.js";
import type { PolicyState } from "./runtime.js";
import { formatAuthority } from "./target.js";

function pairs(raw: RawHeaders): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

export function upstreamName(exchange: Exchange): string {
  return formatAuthority(exchange.target.host, exchange.target.port);
}

/** isIP, skipped for what cannot be an IP literal (no ':' and not only digits and dots): most hosts are names. */
function isIpLiteral(host: string): boolean {
  return (host.includes(":") || !/[^\d.]/.test(host)) && isIP(host) !== 0;
}

/**
 * Sends the request to the tunnel's authority through the shared pool. The connect timer
 * runs until TCP (and TLS) is up; the response timer until the response headers arrive.
 */
export function openUpstreamRequest(exchange: Exchange, outgoing: OutgoingRequest, state: PolicyState): ClientRequest {
  const { scheme, host, port } = exchange.target;
  const options: https.RequestOptions = { method: outgoing.method, path: outgoing.path, headers: outgoing.headers, host, port, agent: state.upstream.agentFor(scheme) };
  if (scheme === "https" && !isIpLiteral(host)) options.servername = host;
  const request = (scheme === "https" ? https : http).request(options);
  armTimers(request, exchange, state);
  return request;
}

function armTimers(request: ClientRequest, exchange: Exchange, state: PolicyState): void {
  const { connect_timeout: connectMs, response_timeout: responseMs } = state.policy.upstream;
  const responseTimer = setTimeout(
    () => request.destroy(new ProxyError("upstream_timeout", `${upstreamName(exchange)} sent no response headers within ${formatDuration(responseMs)}`)),
    responseMs,
  );
  let connectTimer: NodeJS.Timeout | undefined;
  // 'socket', 'response', 'upgrade' and 'close' each come once: plain listeners spare once()'s wrappers.
  request.on("socket", (socket) => {
    if (request.reusedSocket) return;
    // An in-flight request keeps its socket however long the body streams; idle pooled sockets still expire.
    request.setTimeout(0);
    connectTimer = setTimeout(
      () => request.destroy(new ProxyError("upstream_unreachable", `connecting to ${upstreamName(exchange)} timed out after ${formatDuration(connectMs)}`)),
      connectMs,
    );
    socket.once(exchange.target.scheme === "https" ? "secureConnect" : "connect", () => clearTimeout(connectTimer));
    // A name that resolves to portcullis itself (allowed by allow_ips) is caught here, on the address dialled.
    socket.once("connect", () => {
      const why = state.guard.checkSelf(socket.remoteAddress ?? "", socket.remotePort);
      if (why) request.destroy(new DestinationDenied(`${exchange.target.host} resolves to ${why.replace(/^destination /, "")}`));
    });
  });
  const clear = () => {
    clearTimeout(responseTimer);
    clearTimeout(connectTimer);
  };
  request.on("response", clear).on("upgrade", clear).on("close", clear);
}

/** Streams one HTTP exchange: request body up, response body down, neither buffered. */
export function forwardHttp(
  exchange: Exchange,
  req: IncomingMessage,
  res: ServerResponse,
  outgoing: OutgoingRequest,
  state: PolicyState,
  hooks: readonly Hooks[] = [],
): void {
  const upstreamReq = openUpstreamRequest(exchange, outgoing, state);
  upstreamReq.on("continue", () => res.writeContinue());
  upstreamReq.on("response", (upstreamRes) => {
    relayResponse(exchange, upstreamRes, res, state, hooks).catch((error: unknown) => {
      exchange.error ??= { type: "upstream_protocol_error", message: `onResponse hook failed: ${(error as Error).message}` };
      upstreamRes.destroy();
      if (res.headersSent) res.destroy();
      else answerError(res, exchange, new ProxyError("upstream_protocol_error", `onResponse hook failed: ${(error as Error).message}`));
    });
  });
  upstreamReq.on("error", (error) => {
    // Destroyed because the client left: nobody is listening for an answer.
    if (res.destroyed) return;
    answerError(res, exchange, classifyUpstreamError(error, upstreamName(exchange)));
  });
  // The client went away: whatever is still in flight upstream is abandoned with it.
  res.on("close", () => {
    if (!res.writableFinished) upstreamReq.destroy();
  });
  if (outgoing.body !== undefined) {
    upstreamReq.end(outgoing.body);
    return;
  }
  // No Content-Length and not chunked: there is no body to stream, sample or count.
  if (!outgoing.hasBody) {
    upstreamReq.end();
    return;
  }
  const sample = bodySampler(req, state);
  req.on("data", (chunk: Buffer) => {
    exchange.reqBytes += chunk.length;
    sample?.add(chunk);
  });
  req.on("end", () => {
    if (sample) exchange.reqBody = sample.text();
    if (req.rawTrailers.length) upstreamReq.addTrailers(pairs(req.rawTrailers));
  });
  req.pipe(upstreamReq);
}

/** A sampler for the audit line's req_body: text bodies only, up to log.capture_body_bytes. */
export function bodySampler(req: IncomingMessage, state: PolicyState): BodySample | undefined {
  const limit = state.policy.log.capture_body_bytes;
  return limit > 0 && isTextContentType(getHeader(req.rawHeaders, "content-type")) ? new BodySample(limit) : undefined;
}

/** onResponse hooks see (and may change) the status and headers about to be sent. */
async function applyResponseHooks(hooks: readonly Hooks[], exchange: Exchange, answer: Answer): Promise<void> {
  if (!hooks.some((set) => set.onResponse)) return;
  const ctx: ResponseContext = {
    request: { ...requestInfo(exchange), path: exchange.path },
    status: answer.status,
    headers: headerMap(
      () => answer.headers,
      (headers) => (answer.headers = headers),
    ),
  };
  await runHooks(hooks, (set) => set.onResponse, ctx);
  answer.status = ctx.status;
}

async function relayResponse(exchange: Exchange, upstreamRes: IncomingMessage, res: ServerResponse, state: PolicyState, hooks: readonly Hooks[]): Promise<void> {
  res.sendDate = false;
  const plan = planResponse(exchange, upstreamRes, state);
  if (plan.kind === "buffer") {
    answerWhole(exchange, upstreamRes, res, plan, hooks);
    return;
  }
  // Hold the body while hooks run; it flows once the head is sent.
  upstreamRes.pause();
  await applyResponseHooks(hooks, exchange, plan);
  // The upstream may have gone while a hook ran: its 'close' has passed, so look now.
  if (upstreamRes.destroyed && !upstreamRes.complete) {
    exchange.error ??= { type: "upstream_protocol_error", message: `${upstreamName(exchange)} broke the connection before the response started` };
    answerError(res, exchange, new ProxyError("upstream_protocol_error", exchange.error.message));
    return;
  }
  // A transformed body has no known length, whatever a hook put back.
  if (plan.transforms.length) plan.headers = removeHeaders(plan.headers, new Set(["content-length"]));
  res.writeHead(plan.status, plan.statusMessage, plan.headers);
  const addTrailers = () => {
    if (upstreamRes.rawTrailers.length) res.addTrailers(pairs(scrubHeaderValues(upstreamRes.rawTrailers, exchange.injectedSecrets)));
  };
  // A body cut short upstream must reach the client as a broken transfer, never a short success.
  const broken = () => {
    if (res.writableFinished) return;
    exchange.error ??= { type: "upstream_protocol_error", message: `${upstreamName(exchange)} broke the connection mid-body` };
    res.destroy();
  };
  if (plan.transforms.length === 0) {
    relayPlain(exchange, upstreamRes, res, addTrailers, broken);
    return;
  }
  plan.transforms.at(-1)!.on("data", (chunk: Buffer) => {
    exchange.respBytes += chunk.length;
  });
  upstreamRes.on("end", addTrailers);
  // An LLM guard that ends the stream early leaves the rest of the upstream's answer unread.
  plan.onCut?.(() => res.once("finish", () => upstreamRes.destroy()));
  pipeline([upstreamRes, ...plan.transforms, res], (error) => {
    if (error) broken();
  });
}

/**
 * The common case, and the hot path: the body relayed untouched, with backpressure. What pipe()
 * would do for this one source and destination, without its eight listeners added and removed
 * per response. (stream.pipeline costs ~30% of the proxy's CPU per small request in Node 20,
 * mostly building an AbortSignal per call.)
 */
function relayPlain(exchange: Exchange, upstreamRes: IncomingMessage, res: ServerResponse, addTrailers: () => void, broken: () => void): void {
  upstreamRes.on("data", (chunk: Buffer) => {
    exchange.respBytes += chunk.length;
    if (!res.write(chunk)) upstreamRes.pause();
  });
  res.on("drain", () => upstreamRes.resume());
  upstreamRes.on("end", () => {
    addTrailers();
    res.end();
  });
  upstreamRes.on("error", broken);
  upstreamRes.on("close", () => {
    if (!upstreamRes.complete) broken();
  });
  // Held by relayResponse while hooks ran; adding a 'data' listener does not undo an explicit pause.
  upstreamRes.resume();
}

/** A body a policy must see whole (an LLM JSON response): read it (decoded, bounded), then answer. */
function answerWhole(exchange: Exchange, upstreamRes: IncomingMessage, res: ServerResponse, plan: BufferPlan, hooks: readonly Hooks[]): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let overflow = false;
  const source: Readable = plan.decoder ? upstreamRes.pipe(plan.decoder) : upstreamRes;
  const fail = () => {
    if (!res.headersSent) exchange.error ??= { type: "upstream_protocol_error", message: `${upstreamName(exchange)} sent a body that could not be read` };
    res.destroy();
  };
  upstreamRes.once("error", fail);
  plan.decoder?.once("error", () => {
    upstreamRes.destroy();
    // A body that does not decode cannot be checked: the plan denies it.
    send(plan.finish(undefined));
  });
  source.on("data", (chunk: Buffer) => {
    if (overflow) return;
    size += chunk.length;
    if (size > plan.limit) {
      overflow = true;
      upstreamRes.destroy();
      send(plan.finish(undefined));
      return;
    }
    chunks.push(chunk);
  });
  source.once("end", () => {
    if (!overflow) send(plan.finish(Buffer.concat(chunks)));
  });
  let sent = false;
  function send(answer: ReturnType<BufferPlan["finish"]>): void {
    if (sent || res.destroyed) return;
    sent = true;
    applyResponseHooks(hooks, exchange, answer)
      .then(() => {
        res.writeHead(answer.status, answer.statusMessage, answer.headers);
        res.end(answer.body);
        exchange.respBytes = answer.body.length;
      })
      .catch((error: Error) => {
        if (!res.headersSent) answerError(res, exchange, new ProxyError("upstream_protocol_error", `could not answer: ${error.message}`));
        else res.destroy();
      });
  }
}
