import type { ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { Exchange } from "./exchange.js";
import { errorAnswer, ProxyError } from "./proxy-error.js";

/** Notes a proxy error on the exchange so its audit line says what happened. */
export function recordError(exchange: Exchange, error: ProxyError): void {
  exchange.error = { type: error.type, message: error.message };
  if (error.type === "policy_denied" || error.type === "proxy_auth_required") {
    exchange.decision = "deny";
    exchange.rule = error.rule;
    exchange.reason = error.message;
  }
}

/** Answers with the SPEC error body, or breaks the response if it already started. */
export function answerError(res: ServerResponse, exchange: Exchange, error: ProxyError): void {
  recordError(exchange, error);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const answer = errorAnswer(error, exchange.requestId, exchange.scrub);
  // A request refused as malformed may have left bytes we never read; start afresh.
  if (error.type === "bad_request") answer.headers.Connection = "close";
  res.writeHead(answer.status, answer.headers);
  res.end(answer.body);
  exchange.status = answer.status;
}

const REASON: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  407: "Proxy Authentication Required",
  502: "Bad Gateway",
  504: "Gateway Timeout",
};

/** The same answer written straight onto a socket that has no ServerResponse (CONNECT, upgrade). */
export function answerErrorOnSocket(socket: Duplex, error: ProxyError, requestId: string | null, scrub: (text: string) => string): number {
  const answer = errorAnswer(error, requestId, scrub);
  if (socket.writable) {
    const head = [`HTTP/1.1 ${answer.status} ${REASON[answer.status] ?? "Error"}`, ...Object.entries(answer.headers).map(([k, v]) => `${k}: ${v}`), "Connection: close"];
    socket.end(`${head.join("\r\n")}\r\n\r\n${answer.body}`);
  } else {
    socket.destroy();
  }
  return answer.status;
}

export function toProxyError(error: unknown): ProxyError {
  return error instanceof ProxyError ? error : new ProxyError("upstream_protocol_error", "internal proxy error");
}
