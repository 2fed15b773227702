import { isIP } from "node:net";
import { planCredentials } from "../credentials/inject.js";
import { DestinationGuard } from "../policy/destinations.js";
import { anyHostMatches } from "../policy/hosts.js";
import { pathReadings } from "../policy/paths.js";
import { decideConnect, decideEveryReading } from "../policy/rules.js";
import type { Policy } from "../policy/schema.js";
import { parseAbsoluteForm } from "./target.js";

export interface Explanation {
  request: { method: string; url: string; client: string | null; host: string; port: number; path: string; normalised_path: string };
  connect: { decision: "allow" | "deny"; rule: string | null; reason: string } | null;
  decision: "allow" | "deny";
  rule: string | null;
  reason: string;
  destination: string;
  credentials: { name: string; header?: string; query?: string; secrets: string[] }[];
  placeholders: { name: string; secret: string; in: string[]; allowed_here: boolean }[];
  passthrough: boolean;
}

/** What the policy would do with one request, by name only: never a secret value. */
export function explain(policy: Policy, method: string, url: string, client: string | null): Explanation {
  const absolute = parseAbsoluteForm(url);
  if (!absolute) throw new Error(`URL must be absolute, e.g. https://api.github.com/repos/x: got "${url}"`);
  if (client !== null && !policy.clients.some((known) => known.name === client)) throw new Error(`client "${client}" is not defined in the policy`);
  const { scheme, host, port } = absolute.target;
  const readings = pathReadings(absolute.path);
  const normalisedPath = readings[0]!;
  const guard = new DestinationGuard(policy.network.private_destinations, policy.network.allow_ips);
  const literalDenied = isIP(host) ? guard.check(host) : undefined;
  const upperMethod = method.toUpperCase();
  const ruleDecision: { action: "allow" | "deny"; rule: string | null; reason: string } = literalDenied
    ? { action: "deny" as const, rule: "network.private_destinations", reason: literalDenied }
    : decideEveryReading(policy, { host, port, client, method: upperMethod }, readings);
  const connect = scheme === "https" ? (literalDenied ? ruleDecision : decideConnect(policy, { host, port, client })) : null;
  if (policy.clients.length > 0 && client === null) {
    // The proxy would answer 407 before any rule is consulted.
    Object.assign(ruleDecision, { action: "deny", rule: null, reason: "proxy authentication required: the policy defines clients; pass --client NAME" });
  }
  const allowed = ruleDecision.action === "allow" && (connect === null || connect.action === "allow");
  const credentials = allowed
    ? planCredentials(policy.credentials, host, normalisedPath).map((credential) => {
        const part = credential.header ? { header: credential.header.name } : { query: credential.query!.name };
        const template = (credential.header ?? credential.query)!.value;
        return { name: credential.name, ...part, secrets: [...template.matchAll(/\$\{\s*secrets\.([^}\s]+)\s*\}/g)].map((m) => m[1]!) };
      })
    : [];
  return {
    request: { method: upperMethod, url, client, host, port, path: absolute.path, normalised_path: normalisedPath },
    connect: connect && { decision: connect.action, rule: connect.rule, reason: connect.reason },
    decision: connect?.action === "deny" ? "deny" : ruleDecision.action,
    rule: connect?.action === "deny" ? connect.rule : ruleDecision.rule,
    reason: connect?.action === "deny" ? connect.reason : ruleDecision.reason,
    destination: isIP(host)
      ? (literalDenied ?? `${host} may be dialled`)
      : `every address ${host} resolves to is checked when it is dialled (private_destinations: ${policy.network.private_destinations})`,
    credentials,
    placeholders: policy.placeholders.map((placeholder) => ({
      name: placeholder.name,
      secret: placeholder.secret,
      in: placeholder.in,
      allowed_here: anyHostMatches(placeholder.hosts, host),
    })),
    passthrough: anyHostMatches(policy.passthrough.hosts, host),
  };
}
