import type { ProxyMetrics } from "../admin/metrics.js";
import type { Readable } from "node:stream";
import { FORBIDDEN_IN_TRAILERS, getHeader, removeHeaders } from "../core/headers.js";
import type { InboundRequest, Responder, UpstreamCall } from "../core/messages.js";
import { BodySample, isTextContentType } from "../log/body-sample.js";
import type { Policy } from "../policy/schema.js";
import { ProxyError, toProxyError } from "../core/errors.js";
import { answerError } from "./answer-error.js";
import { upstreamName } from "./target.js";
import { relayResponse } from "./relay-response.js";
import { openSession } from "./session.js";
import type { Flow } from "./stage.js";

export interface ForwardOptions {
  metrics: ProxyMetrics;
  /** A WebSocket (or other upgrade) session started: the audit line waits for its end. */
  sessionStarted(): void;
  sessionEnded(): void;
  /** A fault of portcullis itself, for the diagnostics log. */
  internalError(error: unknown, where: string): void;
}

/**
 * The forward step: the request goes to the tunnel's authority through the upstream (whatever
 * protocol it speaks), its body streamed up; the answer comes back through the response
 * phases. A client that leaves abandons what is in flight upstream.
 */
export function forward(flow: Flow, responder: Responder, options: ForwardOptions): void {
  const { exchange, outgoing, state } = flow;
  let session = false;
  // These run inside the transport's event callbacks: whatever throws is answered here, never left to crash the process.
  const guarded = (what: string, run: () => void) => {
    try {
      run();
    } catch (error) {
      options.internalError(error, what);
      answerError(responder, exchange, toProxyError(error));
    }
  };
  const call = state.upstream.send(exchange.target, outgoing, {
    sent: (version) => (exchange.upstreamVersion = version),
    continue: () => guarded("continue", () => responder.writeContinue()),
    response: (upstream) =>
      guarded("response", () => {
        // To an h2 client, a 2xx answer to its extended CONNECT means the WebSocket is open (RFC
        // 8441 5): an upstream that answered without switching must not pass for one.
        if (flow.upgrade && flow.request.httpVersion === "2" && upstream.status >= 200 && upstream.status < 300) {
          upstream.body.destroy();
          answerError(responder, exchange, new ProxyError("upstream_protocol_error", `${upstreamName(exchange.target)} answered the WebSocket handshake with ${upstream.status}, not 101`));
          return;
        }
        relayResponse(flow, upstream, responder);
      }),
    upgraded: (upstream, stream, head) =>
      guarded("upgrade", () => {
        // Only a handshake may switch protocols: anything else would leave the stages behind.
        if (!flow.upgrade) {
          stream.destroy();
          throw new ProxyError("upstream_protocol_error", `${upstreamName(exchange.target)} switched protocols on a request that did not ask to`);
        }
        session = true;
        options.sessionStarted();
        openSession(flow, upstream, stream, head, responder, options.metrics, options.sessionEnded);
      }),
    error: (error) => {
      // Abandoned because the client left: nobody is listening for an answer.
      if (responder.destroyed) return;
      answerError(responder, exchange, error);
    },
  });
  responder.onClose(() => {
    if (!session && !responder.finished) call.abort();
  });
  if (outgoing.body !== undefined) {
    call.write(outgoing.body);
    if (outgoing.bodyContinues) streamRequestBody(flow, flow.request, call);
    else call.end();
  } else if (!outgoing.hasBody) {
    call.end();
  } else if (outgoing.bodyStream) {
    // A rewritten body that turns out malformed cannot be half-sent: the upstream call is dropped.
    const failed = (error: unknown) => {
      call.abort();
      answerError(responder, exchange, toProxyError(error));
    };
    if (outgoing.bodyStream.errored) return failed(outgoing.bodyStream.errored);
    outgoing.bodyStream.on("error", failed);
    streamRequestBody(flow, flow.request, call, outgoing.bodyStream);
  } else {
    streamRequestBody(flow, flow.request, call);
  }
}

/** The client's body, streamed up with backpressure, counted, sampled, and its trailers passed on. */
function streamRequestBody(flow: Flow, request: InboundRequest, call: UpstreamCall, body: Readable = request.body): void {
  const { exchange } = flow;
  const sample = bodySampler(request, flow.state.policy);
  body.on("data", (chunk: Buffer) => {
    exchange.reqBytes += chunk.length;
    sample?.add(chunk);
    if (!call.write(chunk)) body.pause();
  });
  call.onDrain(() => body.resume());
  // Paused after its start was read for the stages (readBodyStart): it flows on from here.
  body.resume();
  body.on("end", () => {
    if (sample) exchange.reqBody = sample.text();
    // Trailers are the client's too: none may smuggle a credential's header (or Proxy-Authorization) past the stages.
    call.end(removeHeaders(removeHeaders(request.trailers(), FORBIDDEN_IN_TRAILERS), exchange.redactedHeaders));
  });
}

/** A sampler for the audit line's req_body: text bodies only, up to log.capture_body_bytes. */
export function bodySampler(request: InboundRequest, policy: Policy): BodySample | undefined {
  const limit = policy.log.capture_body_bytes;
  return limit > 0 && isTextContentType(getHeader(request.headers, "content-type")) ? new BodySample(limit) : undefined;
}
