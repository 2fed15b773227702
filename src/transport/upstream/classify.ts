import { ProxyError } from "../../core/errors.js";

const TLS_CODES = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|HOSTNAME|ALTNAME|EPROTO/;
const UNREACHABLE_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "EADDRNOTAVAIL"]);

/** Turns what the upstream connection threw into the answer a client gets. */
export function classifyUpstreamError(error: unknown, target: string): ProxyError {
  if (error instanceof ProxyError) return error;
  const err = error as NodeJS.ErrnoException & { library?: string; reason?: string };
  const code = err.code ?? "";
  if (code === "EPORTCULLIS_DESTINATION") return new ProxyError("policy_denied", err.message, "network.private_destinations");
  if (UNREACHABLE_CODES.has(code)) {
    return new ProxyError("upstream_unreachable", `cannot connect to ${target}: ${code}`);
  }
  if (TLS_CODES.test(code) || err.library === "SSL routines") {
    return new ProxyError("upstream_tls_error", `TLS with ${target} failed: ${code ? `${code}: ` : ""}${err.reason ?? err.message}`);
  }
  if (code.startsWith("HPE_")) {
    return new ProxyError("upstream_protocol_error", `${target} sent a malformed response: ${code}`);
  }
  if (code === "ECONNRESET" || code === "EPIPE" || err.message === "socket hang up") {
    return new ProxyError("upstream_protocol_error", `${target} closed the connection before answering`);
  }
  return new ProxyError("upstream_protocol_error", `${target}: ${code || err.message}`);
}
