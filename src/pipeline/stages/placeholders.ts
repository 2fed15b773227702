import { bodyNeedsReading, checkPlaceholderHosts, findPlaceholders, substitutePlaceholders } from "../../credentials/placeholders.js";
import type { Flow, Stage } from "../stage.js";

/**
 * Placeholder substitution: the sandbox holds a fake value, the upstream gets the real one.
 * A placeholder seen on its way to a host not listed for it is refused before the policy
 * even looks (exfiltration); the real value goes on only once the request is allowed.
 */
export const placeholders: Stage = {
  name: "placeholders",
  requestHeaders(flow: Flow) {
    if (bodyNeedsReading(flow.state.policy.placeholders, flow.request.headers)) flow.readBody = true;
  },
  request(flow: Flow) {
    if (flow.state.policy.placeholders.length === 0) return;
    flow.notes.placeholders = findPlaceholders(flow.state.policy.placeholders, flow.outgoing);
    checkPlaceholderHosts(flow.notes.placeholders, flow.exchange);
  },
  beforeForward(flow: Flow) {
    const hits = flow.notes.placeholders;
    if (hits?.length) return substitutePlaceholders(hits, flow.exchange, flow.outgoing, flow.state.secrets);
  },
};
