import { ProxyError, errorAnswer } from "../../core/errors.js";
import { restrictAcceptEncoding } from "../../core/headers.js";
import { EchoScrubber, scrubBytes, scrubHeaderValues } from "../../credentials/echo-scrub.js";
import { recordError } from "../answer-error.js";
import { secretsAtStake } from "../secrets-at-stake.js";
import type { Flow, Stage, WholeAnswer } from "../stage.js";

/**
 * Echo scrubbing: a secret portcullis put on a request, or one scoped to its host, that the
 * upstream sends back (in a header, a trailer or the body, whatever its content type, in every
 * spelling a client might decode) reaches the client as [REDACTED]. A body that cannot be
 * decoded is refused.
 */
export const echoScrub: Stage = {
  name: "echo-scrub",
  // Always runs (no `active`): whatever stage put a secret on the request, its echo is scrubbed; with none it checks one length.
  beforeForward(flow: Flow) {
    if (secretsAtStake(flow).length) flow.outgoing.headers = restrictAcceptEncoding(flow.outgoing.headers);
  },
  responseHeaders(flow: Flow, answer) {
    const secrets = secretsAtStake(flow);
    if (secrets.length) answer.headers = scrubHeaderValues(answer.headers, secrets);
  },
  responseTrailers(flow: Flow, trailers) {
    const secrets = secretsAtStake(flow);
    return secrets.length && trailers.length ? scrubHeaderValues(trailers, secrets) : trailers;
  },
  // A WebSocket to a host that got a secret could echo it in a message: such sessions are read.
  webSocketSession: (flow: Flow) => secretsAtStake(flow).length > 0,
  webSocketMessage(flow: Flow, message) {
    if (message.from !== "upstream") return [message];
    const { data, replaced } = scrubBytes(message.data, secretsAtStake(flow));
    if (replaced && flow.exchange.ws?.messages) flow.exchange.ws.messages.scrubbed++;
    message.data = data;
    return [message];
  },
  // Pings, pongs and close reasons are the upstream's words too.
  webSocketControl(flow: Flow, from, payload) {
    if (from !== "upstream" || payload.length === 0) return payload;
    const secrets = secretsAtStake(flow);
    return secrets.length ? scrubBytes(payload, secrets).data : payload;
  },
  responseBody(flow: Flow) {
    const { exchange } = flow;
    const secrets = secretsAtStake(flow);
    if (secrets.length === 0) return undefined;
    return {
      transform: new EchoScrubber(secrets),
      undecodable(): WholeAnswer {
        const error = new ProxyError("upstream_protocol_error", "response Content-Encoding cannot be checked for echoed credentials");
        recordError(exchange, error);
        const answer = errorAnswer(error, exchange.requestId, exchange.scrub);
        return { status: answer.status, reason: undefined, headers: Object.entries(answer.headers).flat(), body: Buffer.from(answer.body) };
      },
    };
  },
};
