import { isIP } from "node:net";
import { Readable } from "node:stream";
import type { BudgetLedger, BudgetRow } from "../budgets/ledger.js";
import { ProxyError } from "../core/errors.js";
import { Exchange } from "../core/exchange.js";
import type { InboundRequest, Target, Upstream } from "../core/messages.js";
import { Identities } from "../credentials/identity.js";
import { planCredentials } from "../credentials/inject.js";
import { SecretStore } from "../credentials/secrets.js";
import { Scrubber } from "../log/scrub.js";
import type { PolicyState } from "../pipeline/context.js";
import type { Flow } from "../pipeline/stage.js";
import { activeStages } from "../pipeline/active-stages.js";
import { parseAbsoluteForm } from "../pipeline/target.js";
import { decideTunnel } from "../policy/decide.js";
import { DestinationGuard, DestinationDenied } from "../policy/destinations.js";
import { anyHostMatches } from "../policy/hosts.js";
import { pathReadings } from "../policy/paths.js";
import { describeRoute } from "../policy/parent-proxy.js";
import type { Policy } from "../policy/schema.js";
import { createLookup, type LookupFunction } from "../transport/upstream/lookup.js";

export interface Explanation {
  request: { method: string; url: string; client: string | null; host: string; port: number; path: string; normalised_path: string };
  connect: { decision: "allow" | "deny"; rule: string | null; reason: string } | null;
  decision: "allow" | "deny";
  rule: string | null;
  reason: string;
  destination: string;
  /** `signs`: the credential signs the request (AWS SigV4) rather than setting a header or parameter. */
  credentials: { name: string; header?: string; query?: string; signs?: "aws_sigv4"; secrets: string[] }[];
  placeholders: { name: string; secret: string; in: string[]; allowed_here: boolean }[];
  passthrough: boolean;
  /** Directly, or through upstream.proxy (and how). */
  route: string;
  /** The budgets that apply to this client here, with their counters now; absent when none applies. */
  budgets?: (BudgetRow & { window_end: string; spent: boolean })[] | { error: string };
}

/** explain never sends anything: the forward step is not part of a dry run. */
const NO_UPSTREAM: Upstream = {
  send() {
    throw new Error("explain is a dry run: nothing is sent upstream");
  },
  dial() {
    throw new Error("explain is a dry run: nothing is dialled");
  },
  destroy: () => undefined,
};

/** Every address a name resolves to, through the proxy's own lookup (overrides, then DNS, each address judged). */
function resolveAll(lookup: LookupFunction, host: string): Promise<{ addresses: string[] } | { denied: string } | { failed: string }> {
  return new Promise((resolve) =>
    lookup(host, { all: true }, (error, addresses) => {
      if (error instanceof DestinationDenied) resolve({ denied: error.message });
      else if (error) resolve({ failed: `${host} does not resolve (${error.code ?? error.message}): the proxy would answer 502 upstream_unreachable` });
      else resolve({ addresses: (addresses as { address: string }[]).map((entry) => entry.address) });
    }),
  );
}

/**
 * What the running proxy would do with one request, by name only (never a secret value): a
 * dry run of the same stage list up to the point where secrets would be resolved, plus the
 * CONNECT check and the destination check the upstream pool makes when it dials.
 */
export async function explain(policy: Policy, method: string, url: string, client: string | null, ledger?: BudgetLedger): Promise<Explanation> {
  const absolute = parseAbsoluteForm(url);
  if (!absolute) throw new Error(`URL must be absolute, e.g. https://api.github.com/repos/x: got "${url}"`);
  if (client !== null && !policy.clients.some((known) => known.name === client)) throw new Error(`client "${client}" is not defined in the policy`);
  const target: Target = absolute.target;
  const { scheme, host, port } = target;
  const upperMethod = method.toUpperCase();
  const scrubber = new Scrubber();
  const guard = new DestinationGuard(policy.network.private_destinations, policy.network.allow_ips);
  const secrets = new SecretStore(policy.secrets, scrubber);
  const state: PolicyState = { policy, guard, upstream: NO_UPSTREAM, passthrough: policy.passthrough.hosts, secrets, identities: new Identities(policy.clients, secrets) };
  const readings = pathReadings(absolute.path);
  const verdict: { action: "allow" | "deny"; rule: string | null; reason: string } = { action: "allow", rule: null, reason: "" };
  const deny = (rule: string | null, reason: string) => Object.assign(verdict, { action: "deny", rule, reason });

  const connectDecision = scheme === "https" ? decideTunnel(state, host, port, client) : null;
  const tunnel = { host, port, client, clientAddr: "explain" };
  const request: InboundRequest = {
    httpVersion: "1.1",
    method: upperMethod,
    target: absolute.path,
    authorities: [absolute.authority],
    headers: ["Host", absolute.authority],
    tunnel,
    secure: scheme === "https",
    clientAddr: "explain",
    upgrade: undefined,
    hasBody: false,
    body: Readable.from([]),
    trailers: () => [],
  };
  const exchange = new Exchange("explain", tunnel, target, upperMethod, absolute.path, request.headers, "1.1");
  exchange.pathReadings = readings;
  const flow: Flow = { exchange, request, outgoing: { method: upperMethod, path: absolute.path, headers: request.headers, hasBody: false }, state, hooks: [], stages: activeStages(state), hostHeader: undefined, upgrade: false, readBody: false, notes: {} };

  if (policy.clients.length > 0 && client === null) {
    // The proxy would answer 407 before any rule is consulted.
    deny(null, "proxy authentication required: the policy defines clients; pass --client NAME");
  } else if (connectDecision?.action === "deny") {
    deny(connectDecision.rule, connectDecision.reason);
  } else {
    try {
      for (const stage of flow.stages) stage.requestHeaders?.(flow);
      for (const stage of flow.stages) await stage.request?.(flow);
      Object.assign(verdict, { action: exchange.decision, rule: exchange.rule, reason: exchange.reason ?? "" });
    } catch (error) {
      if (!(error instanceof ProxyError)) throw error;
      deny(error.rule, error.message);
    }
  }

  let budgets: Explanation["budgets"];
  const budgetRules = ledger?.rulesFor(host, exchange.readings, client) ?? [];
  if (ledger && budgetRules.length > 0) {
    try {
      budgets = await ledger.current(budgetRules, client);
      const spent = budgets.find((row) => row.spent);
      if (spent && verdict.action === "allow") deny(spent.rule, `budget ${spent.rule} is spent for this window: the proxy would answer 429 budget_exceeded until ${spent.window_end}`);
    } catch (error) {
      budgets = { error: (error as Error).message };
      if (verdict.action === "allow") deny(budgetRules[0]!.name, "the budget store cannot be reached: the proxy would answer 503 budget_unavailable");
    }
  }

  let destination: string;
  if (isIP(host)) {
    destination = guard.check(host) ?? `${host} may be dialled`;
  } else {
    const resolved = await resolveAll(createLookup(policy.upstream.resolve, guard), host);
    if ("denied" in resolved) {
      destination = resolved.denied;
      if (verdict.action === "allow") deny("network.private_destinations", resolved.denied);
    } else if ("failed" in resolved) {
      destination = resolved.failed;
    } else {
      destination = `${host} resolves to ${resolved.addresses.join(", ")}: every address may be dialled`;
    }
  }

  const allowed = verdict.action === "allow";
  const credentials = allowed
    ? planCredentials(policy.credentials, host, exchange.pathReadings, scheme).map((credential) => {
        if (credential.aws_sigv4) return { name: credential.name, signs: "aws_sigv4" as const, secrets: [] };
        const part = credential.header ? { header: credential.header.name } : { query: credential.query!.name };
        const template = (credential.header ?? credential.query)!.value;
        return { name: credential.name, ...part, secrets: [...template.matchAll(/\$\{\s*secrets\.([^}\s]+)\s*\}/g)].map((m) => m[1]!) };
      })
    : [];
  return {
    request: { method: upperMethod, url, client, host, port, path: absolute.path, normalised_path: exchange.normalisedPath },
    connect: connectDecision && { decision: connectDecision.action, rule: connectDecision.rule, reason: connectDecision.reason },
    decision: verdict.action,
    rule: verdict.rule,
    reason: verdict.reason,
    destination,
    credentials,
    placeholders: policy.placeholders.map((placeholder) => ({
      name: placeholder.name,
      secret: placeholder.secret,
      in: placeholder.in,
      allowed_here: anyHostMatches(placeholder.hosts, host),
    })),
    passthrough: anyHostMatches(policy.passthrough.hosts, host),
    route: describeRoute(policy.upstream, scheme, host, port, anyHostMatches(policy.passthrough.hosts, host)),
    ...(budgets ? { budgets } : {}),
  };
}
