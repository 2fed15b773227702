import { ProxyError } from "../../core/errors.js";
import type { RawHeaders } from "../../core/headers.js";
import { decideRequest, type Decision } from "../../policy/decide.js";
import type { Flow, Stage } from "../stage.js";

/** Headers some frameworks take as the real method (Rails, Express' method-override, ASP.NET ...). */
const METHOD_OVERRIDES = new Set(["x-http-method-override", "x-http-method", "x-method-override"]);

/** The method the request says, and every method an override header claims it is (one pass over the headers). */
function claimedMethods(method: string, headers: RawHeaders): string[] {
  let methods: string[] | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if ((name.charCodeAt(0) | 0x20) !== 0x78 || !METHOD_OVERRIDES.has(name.toLowerCase())) continue;
    (methods ??= [method]).push(headers[i + 1]!.trim().toUpperCase());
  }
  return methods ? [...new Set(methods)] : [method];
}

/**
 * The network policy: destination guard, then the rules (first match wins), on every reading
 * of the path and every method the request may be taken as; all of them must be allowed.
 */
export const policyDecision: Stage = {
  name: "policy",
  request(flow: Flow) {
    const { exchange, state } = flow;
    let decision: Decision | undefined;
    for (const method of claimedMethods(exchange.method, flow.request.headers)) {
      const verdict = decideRequest(state, {
        host: exchange.target.host,
        port: exchange.target.port,
        client: exchange.tunnel.client,
        method,
        pathReadings: exchange.pathReadings,
      });
      if (!decision || verdict.action === "deny") decision = verdict;
      if (verdict.action === "deny") break;
    }
    exchange.decision = decision!.action;
    exchange.rule = decision!.rule;
    exchange.reason = decision!.reason;
    if (decision!.action === "deny") throw new ProxyError("policy_denied", decision!.reason, decision!.rule);
  },
};
