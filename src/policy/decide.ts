import type { Exchange } from "../proxy/exchange.js";
import type { OutgoingRequest } from "../proxy/rewrite.js";
import type { PolicyState } from "../proxy/runtime.js";

export interface Decision {
  action: "allow" | "deny";
  rule: string | null;
  reason: string;
}

/** Third stage: whether the request may leave. Until network rules exist, everything may. */
export function decideRequest(_exchange: Exchange, _outgoing: OutgoingRequest, _state: PolicyState): Decision {
  return { action: "allow", rule: null, reason: "no network rules configured" };
}
