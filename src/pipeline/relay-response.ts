import { Readable, Writable, type Transform } from "node:stream";
import { pipeline } from "node:stream";
import { pipeline as pipelineAsync } from "node:stream/promises";
import { contentCoding, decoderFor, unsupportedTransferCoding } from "./content-decoding.js";
import { ProxyError } from "../core/errors.js";
import type { Exchange } from "../core/exchange.js";
import { removeHeaders, setHeader, type RawHeaders } from "../core/headers.js";
import type { Responder, UpstreamResponse } from "../core/messages.js";
import { answerError } from "./answer-error.js";
import { upstreamName } from "./target.js";
import type { Answer, BodyObserver, BodyTap, Flow, WholeAnswer } from "./stage.js";

/** What the response body needs, from what the stages asked of it. */
type BodyPlan =
  | { kind: "plain" }
  /** The body is not passed on: this answer goes instead. */
  | { kind: "replace"; answer: WholeAnswer }
  | { kind: "stream"; transforms: Transform[]; taps: BodyTap[] }
  /** Read whole (decoded, bounded) and judged before anything is sent. */
  | { kind: "hold"; decoder: Transform | undefined; transforms: Transform[]; taps: BodyTap[]; limit: number };

const PLAIN: BodyPlan = { kind: "plain" };
const DROPPED_WHEN_DECODED = new Set(["content-length", "content-encoding"]);
const CONTENT_LENGTH = new Set(["content-length"]);

/** HEAD, 204, 304 and head-only answers (gRPC's trailers-only errors) carry no body to judge, rewrite or decode. */
function bodiless(flow: Flow, status: number, upstream: UpstreamResponse): boolean {
  return upstream.headOnly || flow.exchange.method === "HEAD" || status === 204 || status === 304;
}

function planBody(flow: Flow, answer: Answer, upstream: UpstreamResponse, observers: BodyObserver[]): BodyPlan {
  if (bodiless(flow, answer.status, upstream)) return PLAIN;
  const taps: BodyTap[] = [];
  for (const stage of flow.stages) {
    const tap = stage.responseBody?.(flow, answer, upstream);
    if (tap?.observe) observers.push(tap.observe);
    if (tap && (tap.transform || tap.hold)) taps.push(tap);
  }
  if (taps.length === 0) return PLAIN;
  const decoder = decoderFor(contentCoding(upstream.headers));
  if (decoder === "unsupported") {
    for (const tap of taps) {
      const instead = tap.undecodable();
      if (instead !== "pass") return { kind: "replace", answer: instead };
    }
    return PLAIN;
  }
  answer.headers = removeHeaders(answer.headers, decoder ? DROPPED_WHEN_DECODED : CONTENT_LENGTH);
  const transforms = taps.flatMap((tap) => (tap.transform ? [tap.transform] : []));
  const limits = taps.flatMap((tap) => (tap.hold ? [tap.hold.limit] : []));
  if (limits.length) return { kind: "hold", decoder, transforms, taps, limit: Math.min(...limits) };
  return { kind: "stream", transforms: decoder ? [decoder, ...transforms] : transforms, taps };
}

/** The response phase (hooks): awaited only when some stage returns a promise. */
function runResponsePhase(flow: Flow, answer: Answer): Promise<void> | undefined {
  let chain: Promise<void> | undefined;
  for (const stage of flow.stages) {
    if (!stage.response) continue;
    chain = chain ? chain.then(() => stage.response!(flow, answer)) : (stage.response(flow, answer) ?? undefined);
  }
  return chain;
}

function trailersFor(flow: Flow, upstream: UpstreamResponse): RawHeaders {
  let trailers = upstream.trailers();
  for (const stage of flow.stages) if (stage.responseTrailers) trailers = stage.responseTrailers(flow, trailers);
  return trailers;
}

/**
 * The upstream's answer through the response phases to the client. The body streams with
 * backpressure, untouched unless a stage needs it; a body cut short upstream reaches the
 * client as a broken transfer, never a short success.
 */
export function relayResponse(flow: Flow, upstream: UpstreamResponse, responder: Responder): void {
  const { exchange } = flow;
  exchange.upstreamVersion = upstream.httpVersion;
  // RFC 9110 15: a status is three digits, 100 to 599; anything else no client can be given.
  if (!Number.isInteger(upstream.status) || upstream.status < 100 || upstream.status > 599) {
    upstream.body.destroy();
    answerError(responder, exchange, new ProxyError("upstream_protocol_error", `${upstreamName(exchange.target)} answered with status ${upstream.status}`));
    return;
  }
  // (An answer without a body may name the coding its body would have had.)
  const transferCoding = bodiless(flow, upstream.status, upstream) ? undefined : unsupportedTransferCoding(upstream.headers);
  if (transferCoding !== undefined) {
    upstream.body.destroy();
    answerError(responder, exchange, new ProxyError("upstream_protocol_error", `${upstreamName(exchange.target)} answered with Transfer-Encoding ${JSON.stringify(transferCoding.slice(0, 40))}, which portcullis does not decode`));
    return;
  }
  const answer: Answer = { status: upstream.status, reason: upstream.reason, headers: upstream.headers };
  for (const stage of flow.stages) stage.responseHeaders?.(flow, answer, upstream);
  const observers: BodyObserver[] = [];
  const plan = planBody(flow, answer, upstream, observers);
  if (plan.kind === "replace") {
    upstream.body.destroy();
    for (const observer of observers) observer.end(false);
    sendWhole(flow, responder, plan.answer);
    return;
  }
  if (plan.kind === "hold") {
    holdWhole(flow, upstream, responder, answer, plan);
    observeBody(upstream.body, observers);
    return;
  }
  // Paused first, so the observers' 'data' listener does not set the body flowing before the head is sent.
  upstream.body.pause();
  observeBody(upstream.body, observers);
  const start = () => {
    // The upstream may have gone while a hook ran: its close has passed, so look now.
    if (upstream.body.destroyed && !upstream.complete) {
      exchange.error ??= { type: "upstream_protocol_error", message: `${upstreamName(exchange.target)} broke the connection before the response started` };
      answerError(responder, exchange, new ProxyError("upstream_protocol_error", exchange.error.message));
      return;
    }
    // A transformed body has no known length, whatever a hook put back.
    if (plan.kind === "stream") answer.headers = removeHeaders(answer.headers, CONTENT_LENGTH);
    // The head is the whole answer (gRPC's trailers-only errors): it goes as one.
    if (upstream.headOnly && plan.kind === "plain") {
      upstream.body.resume();
      responder.writeHead(answer.status, answer.reason, answer.headers, true);
      return;
    }
    responder.writeHead(answer.status, answer.reason, answer.headers);
    streamBody(flow, upstream, responder, plan.kind === "stream" ? plan : undefined);
  };
  // Hold the body while hooks run; it flows once the head is sent.
  upstream.body.pause();
  const pending = runResponsePhase(flow, answer);
  if (!pending) return start();
  // A hook that fails is portcullis' own fault (operator code), not the upstream's; so is a head
  // a hook made that the transport cannot write.
  pending.then(start).catch((error: Error) => {
    upstream.body.destroy();
    answerError(responder, exchange, new ProxyError("internal_error", `onResponse hook failed: ${error.message}`));
  });
}

/** Observers see the upstream's bytes as they pass; they never pause or hold the body. */
function observeBody(body: Readable, observers: readonly BodyObserver[]): void {
  if (observers.length === 0) return;
  let ended = false;
  body.on("data", (chunk: Buffer) => {
    for (const observer of observers) observer.write(chunk);
  });
  body.once("end", () => {
    ended = true;
    for (const observer of observers) observer.end(true);
  });
  body.once("close", () => {
    if (!ended) for (const observer of observers) observer.end(false);
  });
}

function streamBody(flow: Flow, upstream: UpstreamResponse, responder: Responder, plan: { transforms: Transform[]; taps: BodyTap[] } | undefined): void {
  const { exchange } = flow;
  let ended = false;
  const broken = () => {
    if (ended) return;
    exchange.error ??= { type: "upstream_protocol_error", message: `${upstreamName(exchange.target)} broke the connection mid-body` };
    responder.fail();
  };
  let cut = false;
  const end = () => {
    ended = true;
    responder.end(undefined, trailersFor(flow, upstream));
    // A guard that ended the stream early leaves the rest of the upstream's answer unread.
    if (cut) upstream.body.destroy();
  };
  if (!plan || plan.transforms.length === 0) {
    upstream.body.on("error", broken);
    upstream.body.on("close", () => {
      if (!upstream.complete) broken();
    });
    pump(exchange, upstream.body, responder, end);
    return;
  }
  for (const tap of plan.taps) tap.onCut?.(() => (cut = true));
  const last = plan.transforms.at(-1)!;
  pipeline([upstream.body, ...plan.transforms], (error) => {
    if (error) broken();
  });
  pump(exchange, last, responder, end);
}

/**
 * The hot path: a body relayed with backpressure. What pipe() would do for this one source
 * and destination, without its eight listeners added and removed per response.
 */
function pump(exchange: Exchange, source: Readable, responder: Responder, end: () => void): void {
  // An empty body can end while it is held for the hooks (an h2 END_STREAM on an empty DATA
  // frame is read, and 'end' emitted, even from a paused stream): nothing is left to relay.
  if (source.readableEnded) return end();
  source.on("data", (chunk: Buffer) => {
    exchange.respBytes += chunk.length;
    if (!responder.write(chunk)) source.pause();
  });
  responder.onDrain(() => source.resume());
  source.on("end", end);
  // Held while hooks ran; adding a 'data' listener does not undo an explicit pause.
  source.resume();
}

/** A body a policy must see whole (an LLM JSON response): read it (decoded, bounded), judge it, then answer. */
function holdWhole(flow: Flow, upstream: UpstreamResponse, responder: Responder, answer: Answer, plan: Extract<BodyPlan, { kind: "hold" }>): void {
  const { exchange } = flow;
  const chunks: Buffer[] = [];
  let size = 0;
  let concluded = false;
  const source: Readable = plan.decoder ? upstream.body.pipe(plan.decoder) : upstream.body;
  upstream.body.once("error", () => {
    if (concluded) return;
    concluded = true;
    if (!responder.headersSent) exchange.error ??= { type: "upstream_protocol_error", message: `${upstreamName(exchange.target)} sent a body that could not be read` };
    responder.fail();
  });
  const conclude = (body: Buffer | undefined) => {
    if (concluded) return;
    concluded = true;
    let edited: Buffer;
    try {
      for (const tap of plan.taps) {
        const instead = tap.hold?.judge(body);
        if (instead) return sendWhole(flow, responder, instead);
      }
      if (body === undefined) return responder.fail();
      edited = body;
      for (const tap of plan.taps) if (tap.hold?.edit) edited = tap.hold.edit(edited);
    } catch (error) {
      // A judge that cannot read the answer (nested past what JSON.stringify can write, say) refuses it.
      return answerError(responder, exchange, new ProxyError("upstream_protocol_error", `${upstreamName(exchange.target)} sent an answer that could not be checked (${(error as Error).message})`));
    }
    transformWhole(edited, plan.transforms).then(
      (final) => sendWhole(flow, responder, { ...answer, headers: setHeader(answer.headers, "Content-Length", String(final.length)), body: final }),
      () => responder.fail(),
    );
  };
  // A body that does not decode cannot be checked: the judges deny it.
  plan.decoder?.once("error", () => {
    upstream.body.destroy();
    conclude(undefined);
  });
  source.on("data", (chunk: Buffer) => {
    if (concluded) return;
    size += chunk.length;
    if (size > plan.limit) {
      upstream.body.destroy();
      conclude(undefined);
      return;
    }
    chunks.push(chunk);
  });
  source.once("end", () => conclude(Buffer.concat(chunks)));
}

async function transformWhole(body: Buffer, transforms: Transform[]): Promise<Buffer> {
  if (transforms.length === 0) return body;
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      out.push(chunk);
      callback();
    },
  });
  await pipelineAsync([Readable.from([body]), ...transforms, sink]);
  return Buffer.concat(out);
}

/** An answer with its whole body (a judge's, or a stage's own: flow.answer): through the response phase, then sent at once. */
export function sendWhole(flow: Flow, responder: Responder, whole: WholeAnswer): void {
  const send = () => {
    if (responder.destroyed) return;
    responder.writeHead(whole.status, whole.reason, whole.headers);
    responder.end(whole.body);
    flow.exchange.respBytes = whole.body.length;
  };
  const pending = runResponsePhase(flow, whole);
  if (!pending) return send();
  pending.then(send).catch((error: Error) => {
    if (!responder.headersSent) answerError(responder, flow.exchange, new ProxyError("internal_error", `onResponse hook failed: ${error.message}`));
    else responder.fail();
  });
}
