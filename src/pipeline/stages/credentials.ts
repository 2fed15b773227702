import { injectCredentials, planCredentials } from "../../credentials/inject.js";
import type { Flow, Stage } from "../stage.js";

/**
 * Credential injection: the credentials whose hosts (and paths) match are put on the allowed
 * request. A secret that cannot be resolved answers 502 credential_unavailable; the request
 * is never forwarded without it.
 */
export const credentials: Stage = {
  name: "credentials",
  beforeForward(flow: Flow) {
    const { state, exchange, outgoing } = flow;
    if (state.policy.credentials.length === 0) return;
    const client = exchange.tunnel.client;
    const enabled = client === null ? undefined : state.clientCredentials?.(client);
    const available = enabled ? state.policy.credentials.filter((credential) => enabled.includes(credential.name)) : state.policy.credentials;
    const plan = planCredentials(available, exchange.target.host, exchange.normalisedPath, exchange.target.scheme);
    if (plan.length) return injectCredentials(plan, exchange, outgoing, state.secrets);
  },
};
