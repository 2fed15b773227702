import { anyHostMatches } from "./hosts.js";
import { pathMatches } from "./paths.js";
import type { Policy, Rule } from "./schema.js";

export const DEFAULT_PORTS: readonly number[] = [80, 443];

export interface RequestFacts {
  host: string;
  port: number;
  client: string | null;
  method: string;
  /** normalised (see normalisePath) */
  path: string;
}

export interface Decision {
  action: "allow" | "deny";
  rule: string | null;
  reason: string;
}

function reachesTarget(rule: Rule, host: string, port: number, client: string | null): boolean {
  return (
    anyHostMatches(rule.hosts, host) &&
    (rule.ports ?? DEFAULT_PORTS).includes(port) &&
    (rule.clients === undefined || (client !== null && rule.clients.includes(client)))
  );
}

function describeTarget(facts: Pick<RequestFacts, "host" | "port" | "client">): string {
  return `${facts.host}:${facts.port}${facts.client ? ` for client ${facts.client}` : ""}`;
}

/** Request-level decision: the first rule matching host, port, client, method and path wins; else the default. */
export function decide(policy: Policy, facts: RequestFacts): Decision {
  for (const rule of policy.network.rules) {
    if (!reachesTarget(rule, facts.host, facts.port, facts.client)) continue;
    if (rule.methods && !rule.methods.includes(facts.method.toUpperCase())) continue;
    if (rule.paths && !rule.paths.some((glob) => pathMatches(glob, facts.path))) continue;
    return {
      action: rule.action,
      rule: rule.name,
      reason: `${rule.action === "allow" ? "allowed" : "denied"} by rule ${rule.name}: ${facts.method} ${describeTarget(facts)}${facts.path}`,
    };
  }
  return defaultDecision(policy, `no rule matches ${facts.method} ${describeTarget(facts)}${facts.path}`);
}

/** The request decided under every reading of its path: any denial wins, else the first reading's allow. */
export function decideEveryReading(policy: Policy, facts: Omit<RequestFacts, "path">, paths: readonly string[]): Decision {
  let first: Decision | undefined;
  for (const path of paths) {
    const decision = decide(policy, { ...facts, path });
    if (decision.action === "deny") return decision;
    first ??= decision;
  }
  return first!;
}

function defaultDecision(policy: Policy, why: string): Decision {
  const action = policy.network.default;
  return { action, rule: null, reason: `${why}; network.default is ${action}` };
}

/**
 * CONNECT-level decision: refused only when no request through the tunnel could be allowed,
 * i.e. the first rule that applies to every request to this host:port denies, or no allow
 * rule applies and the default denies.
 */
export function decideConnect(policy: Policy, facts: Pick<RequestFacts, "host" | "port" | "client">): Decision {
  for (const rule of policy.network.rules) {
    if (!reachesTarget(rule, facts.host, facts.port, facts.client)) continue;
    if (rule.action === "allow") return { action: "allow", rule: rule.name, reason: `rule ${rule.name} may allow requests to ${describeTarget(facts)}` };
    if (!rule.methods && !rule.paths) {
      return { action: "deny", rule: rule.name, reason: `denied by rule ${rule.name}: every request to ${describeTarget(facts)}` };
    }
  }
  return defaultDecision(policy, `no rule allows ${describeTarget(facts)}`);
}
