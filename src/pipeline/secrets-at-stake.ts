import { awsSecretName } from "../credentials/sigv4/sources.js";
import { anyHostMatches } from "../policy/hosts.js";
import type { Policy } from "../policy/schema.js";
import { templateReferences } from "../policy/validate.js";
import type { Flow } from "./stage.js";

const NONE: readonly string[] = [];

/** The secrets a policy's credentials and placeholders scope to each host, by name (a policy is immutable: kept per policy). */
const scopedNames = new WeakMap<Policy, Map<string, string[]>>();

function secretNamesScopedTo(policy: Policy, host: string): string[] {
  let byHost = scopedNames.get(policy);
  if (!byHost) scopedNames.set(policy, (byHost = new Map()));
  let names = byHost.get(host);
  if (names) return names;
  const found = new Set<string>();
  for (const credential of policy.credentials) {
    if (!anyHostMatches(credential.hosts, host)) continue;
    if (credential.aws_sigv4) {
      // What a signed request carries: the key id and the session token (the secret key itself never travels).
      found.add(awsSecretName(credential.name, "access_key_id"));
      if (credential.aws_sigv4.session_token) found.add(awsSecretName(credential.name, "session_token"));
      continue;
    }
    const template = (credential.header ?? credential.query)?.value;
    if (template) for (const name of templateReferences(template).secrets) found.add(name);
  }
  for (const placeholder of policy.placeholders) if (anyHostMatches(placeholder.hosts, host)) found.add(placeholder.secret);
  names = [...found];
  // Bounded: hosts come from clients.
  if (byHost.size < 10_000) byHost.set(host, names);
  return names;
}

/**
 * What an answer from this host may echo: the secrets put on this request, and every known
 * value of a secret scoped to the host even when this request did not carry it. An upstream
 * that stored one (a note, a webhook's config, another client's request) hands it back later.
 */
export function secretsAtStake(flow: Flow): readonly string[] {
  const { exchange, state } = flow;
  const injected = exchange.injectedSecrets;
  let notes = flow.notes.secretsAtStake;
  if (!notes) {
    const names = secretNamesScopedTo(state.policy, exchange.target.host);
    const scoped = names.length === 0 ? NONE : names.flatMap((name) => state.secrets.known(name));
    notes = flow.notes.secretsAtStake = { scoped, injectedSeen: -1, all: NONE };
  }
  if (notes.scoped.length === 0) return injected;
  // Injected secrets only ever grow (the AWS stage adds its keys last): the union is made again only then.
  if (notes.injectedSeen !== injected.length) {
    notes.all = injected.length === 0 ? notes.scoped : [...new Set([...injected, ...notes.scoped])];
    notes.injectedSeen = injected.length;
  }
  return notes.all;
}
