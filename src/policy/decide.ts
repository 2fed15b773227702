import { isIP } from "node:net";
import type { DestinationGuard } from "./destinations.js";
import { decideConnect, decideEveryReading, type Decision } from "./rules.js";
import type { Policy } from "./schema.js";

export type { Decision };

export const PRIVATE_DESTINATION_RULE = "network.private_destinations";

/** What a decision needs of the running policy: the rules and the destination guard. */
export interface PolicyView {
  readonly policy: Policy;
  readonly guard: DestinationGuard;
}

export interface RequestDecisionFacts {
  host: string;
  port: number;
  client: string | null;
  method: string;
  /** Every reading of the path (see pathReadings); all of them must be allowed. */
  pathReadings: readonly string[];
}

/** An IP literal is checked here; a name is checked on every address it resolves to, when it is dialled. */
function literalDestination(view: PolicyView, host: string, port: number): Decision | undefined {
  const why = view.guard.checkSelf(host, port) ?? (isIP(host) ? view.guard.check(host) : undefined);
  return why ? { action: "deny", rule: PRIVATE_DESTINATION_RULE, reason: why } : undefined;
}

/** The policy decision for one request: destination, then the network rules (first match wins). */
export function decideRequest(view: PolicyView, facts: RequestDecisionFacts): Decision {
  const { host, port, client, method } = facts;
  return literalDestination(view, host, port) ?? decideEveryReading(view.policy, { host, port, client, method }, facts.pathReadings);
}

/** The decision for a CONNECT: refused when nothing inside the tunnel could be allowed. */
export function decideTunnel(view: PolicyView, host: string, port: number, client: string | null): Decision {
  return literalDestination(view, host, port) ?? decideConnect(view.policy, { host, port, client });
}
