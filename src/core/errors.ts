import { headerReason } from "./reason-header.js";

export type ProxyErrorType =
  | "bad_request"
  | "policy_denied"
  | "proxy_auth_required"
  | "upstream_unreachable"
  | "upstream_tls_error"
  | "credential_unavailable"
  | "upstream_protocol_error"
  | "upstream_timeout"
  | "budget_exceeded"
  | "budget_unavailable"
  | "audit_unavailable"
  | "internal_error";

const STATUS: Record<ProxyErrorType, number> = {
  bad_request: 400,
  policy_denied: 403,
  proxy_auth_required: 407,
  upstream_unreachable: 502,
  upstream_tls_error: 502,
  credential_unavailable: 502,
  upstream_protocol_error: 502,
  upstream_timeout: 504,
  budget_exceeded: 429,
  budget_unavailable: 503,
  audit_unavailable: 503,
  internal_error: 500,
};

/** An answer portcullis gives itself (SPEC section 5), never one relayed from an upstream. */
export class ProxyError extends Error {
  readonly status: number;

  constructor(
    readonly type: ProxyErrorType,
    message: string,
    readonly rule: string | null = null,
    /** A more precise status of the same family (431, 414 for a bad_request). */
    status?: number,
  ) {
    super(message);
    this.name = "ProxyError";
    this.status = status ?? STATUS[type];
  }
}

export interface ErrorAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The SPEC error answer; `scrub` removes any secret value that found its way into the message. */
export function errorAnswer(error: ProxyError, requestId: string | null, scrub: (text: string) => string): ErrorAnswer {
  const body = JSON.stringify({
    error: { type: error.type, message: scrub(error.message), rule: error.rule, request_id: requestId },
  });
  const headers: Record<string, string> = {
    "Content-Type": "application/json",
    "Content-Length": String(Buffer.byteLength(body)),
    "X-Portcullis-Error": error.type,
    "X-Portcullis-Reason": headerReason(scrub(error.message)),
    "Cache-Control": "no-store",
  };
  if (requestId) headers["X-Request-Id"] = requestId;
  if (error.type === "proxy_auth_required") headers["Proxy-Authenticate"] = 'Basic realm="portcullis"';
  return { status: error.status, headers, body };
}

/** Anything thrown that is not a ProxyError is a fault of portcullis itself, never blamed on the upstream. */
export function toProxyError(error: unknown): ProxyError {
  return error instanceof ProxyError ? error : new ProxyError("internal_error", "internal proxy error");
}
