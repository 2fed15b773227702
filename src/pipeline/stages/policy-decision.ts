import { ProxyError } from "../../core/errors.js";
import { decideRequest } from "../../policy/decide.js";
import type { Flow, Stage } from "../stage.js";

/** The network policy: destination guard, then the rules (first match wins), on every reading of the path. */
export const policyDecision: Stage = {
  name: "policy",
  request(flow: Flow) {
    const { exchange, state } = flow;
    const decision = decideRequest(state, {
      host: exchange.target.host,
      port: exchange.target.port,
      client: exchange.tunnel.client,
      method: exchange.method,
      pathReadings: exchange.pathReadings,
    });
    exchange.decision = decision.action;
    exchange.rule = decision.rule;
    exchange.reason = decision.reason;
    if (decision.action === "deny") throw new ProxyError("policy_denied", decision.reason, decision.rule);
  },
};
