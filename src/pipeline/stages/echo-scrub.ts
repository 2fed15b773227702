import { ProxyError, errorAnswer } from "../../core/errors.js";
import { restrictAcceptEncoding } from "../../core/headers.js";
import { EchoScrubber, scrubBytes, scrubHeaderValues } from "../../credentials/echo-scrub.js";
import { recordError } from "../answer-error.js";
import type { Flow, Stage, WholeAnswer } from "../stage.js";

/**
 * Echo scrubbing: a secret portcullis put on a request that the upstream sends back (in a
 * header, a trailer or the body, whatever its content type, in every spelling a client might
 * decode) reaches the client as [REDACTED]. A body that cannot be decoded is refused.
 */
export const echoScrub: Stage = {
  name: "echo-scrub",
  // Always runs (no `active`): whatever stage put a secret on the request, its echo is scrubbed; with none it checks one length.
  beforeForward(flow: Flow) {
    if (flow.exchange.injectedSecrets.length) flow.outgoing.headers = restrictAcceptEncoding(flow.outgoing.headers);
  },
  responseHeaders(flow: Flow, answer) {
    const secrets = flow.exchange.injectedSecrets;
    if (secrets.length) answer.headers = scrubHeaderValues(answer.headers, secrets);
  },
  responseTrailers(flow: Flow, trailers) {
    const secrets = flow.exchange.injectedSecrets;
    return secrets.length && trailers.length ? scrubHeaderValues(trailers, secrets) : trailers;
  },
  // A WebSocket to a host that got a secret could echo it in a message: such sessions are read.
  webSocketSession: (flow: Flow) => flow.exchange.injectedSecrets.length > 0,
  webSocketMessage(flow: Flow, message) {
    if (message.from !== "upstream") return [message];
    const { data, replaced } = scrubBytes(message.data, flow.exchange.injectedSecrets);
    if (replaced && flow.exchange.ws?.messages) flow.exchange.ws.messages.scrubbed++;
    message.data = data;
    return [message];
  },
  responseBody(flow: Flow) {
    const { exchange } = flow;
    if (exchange.injectedSecrets.length === 0) return undefined;
    return {
      transform: new EchoScrubber(exchange.injectedSecrets),
      undecodable(): WholeAnswer {
        const error = new ProxyError("upstream_protocol_error", "response Content-Encoding cannot be checked for echoed credentials");
        recordError(exchange, error);
        const answer = errorAnswer(error, exchange.requestId, exchange.scrub);
        return { status: answer.status, reason: undefined, headers: Object.entries(answer.headers).flat(), body: Buffer.from(answer.body) };
      },
    };
  },
};
