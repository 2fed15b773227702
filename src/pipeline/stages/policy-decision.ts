import { ProxyError } from "../../core/errors.js";
import { getHeaderValues, type RawHeaders } from "../../core/headers.js";
import { decideRequest, type Decision } from "../../policy/decide.js";
import type { Flow, Stage } from "../stage.js";

/** Headers some frameworks take as the real method (Rails, Express' method-override, ASP.NET ...). */
const METHOD_OVERRIDES = ["x-http-method-override", "x-http-method", "x-method-override"];

/** The method the request says, and every method an override header claims it is. */
function claimedMethods(method: string, headers: RawHeaders): string[] {
  const methods = [method];
  for (const name of METHOD_OVERRIDES) for (const value of getHeaderValues(headers, name)) methods.push(value.trim().toUpperCase());
  return [...new Set(methods)];
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
