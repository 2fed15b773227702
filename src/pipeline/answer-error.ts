import { STATUS_CODES } from "node:http";
import type { Exchange } from "../core/exchange.js";
import { errorAnswer, type ProxyError } from "../core/errors.js";
import type { Responder } from "../core/messages.js";
import { headerReason } from "../core/reason-header.js";

/** Notes a proxy error on the exchange so its audit line says what happened. */
export function recordError(exchange: Exchange, error: ProxyError): void {
  exchange.error = { type: error.type, message: error.message };
  if (error.type === "policy_denied" || error.type === "proxy_auth_required") {
    exchange.decision = "deny";
    exchange.rule = error.rule;
    exchange.reason = error.message;
  }
}

/**
 * The one place an answer portcullis makes itself is written (SPEC section 5), whatever
 * protocol carries it: the status, the JSON body, X-Portcullis-Error and -Reason. Returns the status.
 * `reasonInStatusLine` is for a refused CONNECT: clients show its status line, never its body
 * (SPEC section 12: "403 Forbidden by portcullis: REASON").
 */
export function writeErrorAnswer(
  responder: Responder,
  error: ProxyError,
  requestId: string | null,
  scrub: (text: string) => string,
  reasonInStatusLine = false,
): number {
  const answer = errorAnswer(error, requestId, scrub);
  const headers = Object.entries(answer.headers).flat();
  // A request refused as malformed may have left bytes we never read; start afresh.
  if (error.type === "bad_request") headers.push("Connection", "close");
  const statusReason = reasonInStatusLine ? `${STATUS_CODES[answer.status] ?? "Error"} by portcullis: ${headerReason(scrub(error.message))}` : undefined;
  responder.writeHead(answer.status, statusReason, headers);
  responder.end(Buffer.from(answer.body));
  return answer.status;
}

/** Answers an exchange with a proxy error, or breaks the response off if it already started. */
export function answerError(responder: Responder, exchange: Exchange, error: ProxyError): void {
  recordError(exchange, error);
  if (responder.headersSent) {
    responder.fail();
    return;
  }
  if (responder.destroyed) return;
  try {
    exchange.status = writeErrorAnswer(responder, error, exchange.requestId, exchange.scrub);
  } catch {
    // The transport cannot take even portcullis' own answer (the stream is gone): break it off.
    responder.fail();
  }
}
