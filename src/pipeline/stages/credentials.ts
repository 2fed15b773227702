import { injectCredentials, planCredentials } from "../../credentials/inject.js";
import type { Credential } from "../../policy/schema.js";
import type { Flow, Stage } from "../stage.js";

/**
 * Credential injection: the credentials whose hosts (and paths) match are put on the allowed
 * request. A secret that cannot be resolved answers 502 credential_unavailable; the request
 * is never forwarded without it.
 */
/** The file's credentials this request's client may have: all, or only those a registered client was given. */
export function enabledCredentials(flow: Flow): readonly Credential[] {
  const { state, exchange } = flow;
  const client = exchange.tunnel.client;
  const enabled = client === null ? undefined : state.clientCredentials?.(client);
  return enabled ? state.policy.credentials.filter((credential) => enabled.includes(credential.name)) : state.policy.credentials;
}

export const credentials: Stage = {
  name: "credentials",
  active: (state) => state.policy.credentials.length > 0,
  beforeForward(flow: Flow) {
    const { state, exchange, outgoing } = flow;
    if (state.policy.credentials.length === 0) return;
    const plan = planCredentials(enabledCredentials(flow), exchange.target.host, exchange.pathReadings, exchange.target.scheme);
    if (plan.length) return injectCredentials(plan, exchange, outgoing, state.secrets);
  },
};
