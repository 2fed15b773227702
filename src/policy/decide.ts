import { isIP } from "node:net";
import type { Exchange } from "../proxy/exchange.js";
import type { PolicyState } from "../proxy/runtime.js";
import { decideConnect, decideEveryReading, type Decision } from "./rules.js";

export type { Decision };

export const PRIVATE_DESTINATION_RULE = "network.private_destinations";

/** An IP literal is checked here; a name is checked on every address it resolves to, when it is dialled. */
function literalDestination(state: PolicyState, host: string, port: number): Decision | undefined {
  const why = state.guard.checkSelf(host, port) ?? (isIP(host) ? state.guard.check(host) : undefined);
  return why ? { action: "deny", rule: PRIVATE_DESTINATION_RULE, reason: why } : undefined;
}

/** The policy stage for one request: destination, then the network rules (first match wins). */
export function decideRequest(exchange: Exchange, state: PolicyState): Decision {
  const { host, port } = exchange.target;
  return (
    literalDestination(state, host, port) ??
    decideEveryReading(state.policy, { host, port, client: exchange.tunnel.client, method: exchange.method }, exchange.pathReadings)
  );
}

/** The policy stage for a CONNECT: refused when nothing inside the tunnel could be allowed. */
export function decideTunnel(state: PolicyState, host: string, port: number, client: string | null): Decision {
  return literalDestination(state, host, port) ?? decideConnect(state.policy, { host, port, client });
}
