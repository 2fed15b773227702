import type { DestinationGuard } from "./destinations.js";
import { isIpLiteral } from "./hosts.js";
import { decideConnect, decideEveryReading, type Decision } from "./rules.js";
import type { Policy, Rule } from "./schema.js";

export type { Decision };

export const PRIVATE_DESTINATION_RULE = "network.private_destinations";

/** What a decision needs of the running policy: the rules and the destination guard. */
export interface PolicyView {
  readonly policy: Policy;
  readonly guard: DestinationGuard;
  /** A client registered at run time: its own rules, judged before the file's. */
  clientRules?(client: string): readonly Rule[] | undefined;
  /** A registered client that has since been revoked or has expired (its tunnels are being closed). */
  clientGone?(client: string): boolean;
}

export const REGISTERED_CLIENT_RULE = "admin.clients";

function goneClient(view: PolicyView, client: string | null): Decision | undefined {
  if (client === null || !view.clientGone?.(client)) return undefined;
  return { action: "deny", rule: REGISTERED_CLIENT_RULE, reason: `client ${client} is no longer registered (revoked or expired)` };
}

const withOwnRules = new WeakMap<readonly Rule[], { base: Policy; merged: Policy }>();

/** The policy as one client sees it: its registered rules first, then the file's (built once per policy and client). */
function policyFor(view: PolicyView, client: string | null): Policy {
  const own = client === null ? undefined : view.clientRules?.(client);
  if (!own?.length) return view.policy;
  const cached = withOwnRules.get(own);
  if (cached?.base === view.policy) return cached.merged;
  const merged: Policy = { ...view.policy, network: { ...view.policy.network, rules: [...own, ...view.policy.network.rules] } };
  withOwnRules.set(own, { base: view.policy, merged });
  return merged;
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
  const why = view.guard.checkSelf(host, port) ?? (isIpLiteral(host) ? view.guard.check(host) : undefined);
  return why ? { action: "deny", rule: PRIVATE_DESTINATION_RULE, reason: why } : undefined;
}

/** The policy decision for one request: destination, then the network rules (first match wins). */
export function decideRequest(view: PolicyView, facts: RequestDecisionFacts): Decision {
  const { host, port, client, method } = facts;
  return goneClient(view, client) ?? literalDestination(view, host, port) ?? decideEveryReading(policyFor(view, client), { host, port, client, method }, facts.pathReadings);
}

/** The decision for a CONNECT: refused when nothing inside the tunnel could be allowed. */
export function decideTunnel(view: PolicyView, host: string, port: number, client: string | null): Decision {
  return goneClient(view, client) ?? literalDestination(view, host, port) ?? decideConnect(policyFor(view, client), { host, port, client });
}
