import { credentialUnavailable } from "../../credentials/inject.js";
import { bodyStartToRead, checkPlaceholderHosts, findPlaceholders, holdsPlaceholder, replacePlaceholder, substitutePlaceholders } from "../../credentials/placeholders.js";
import { anyHostMatches } from "../../policy/hosts.js";
import type { Flow, Stage, WsEnd, WsMessage } from "../stage.js";

/**
 * A placeholder in a client's message: swapped where it may go, the session ended where it may
 * not. A message without one is answered synchronously (most are; resolving a secret is not).
 */
function placeholdersInMessage(flow: Flow, message: WsMessage): WsMessage[] | WsEnd | Promise<WsMessage[] | WsEnd> {
  if (message.from !== "client") return [message];
  const text = message.data.toString("latin1");
  if (!flow.state.policy.placeholders.some((placeholder) => holdsPlaceholder(text, placeholder.placeholder))) return [message];
  return substituteInMessage(flow, message, text);
}

/** `latin1` is the message's bytes as latin1, so every spelling of a placeholder is found in text and binary alike. */
async function substituteInMessage(flow: Flow, message: WsMessage, latin1: string): Promise<WsMessage[] | WsEnd> {
  const { exchange, state } = flow;
  let text = latin1;
  let changed = false;
  for (const placeholder of state.policy.placeholders) {
    if (!holdsPlaceholder(text, placeholder.placeholder)) continue;
    if (!anyHostMatches(placeholder.hosts, exchange.target.host)) {
      const reason = `placeholder sent to a host not allowed to receive it: placeholder "${placeholder.name}" (in a WebSocket message) may only go to ${placeholder.hosts.join(", ")}`;
      exchange.placeholders.push(placeholder.name);
      Object.assign(exchange, { decision: "deny", rule: placeholder.name, reason });
      exchange.error = { type: "policy_denied", message: reason };
      if (exchange.ws?.messages) exchange.ws.messages.denied++;
      return { close: 1008, reason: `policy_denied: placeholder ${placeholder.name}` };
    }
    if (message.binary || !placeholder.in.includes("websocket") || !placeholder.schemes.includes(exchange.target.scheme)) continue;
    let value: string;
    try {
      value = await state.secrets.resolve(placeholder.secret);
    } catch (error) {
      exchange.error = { type: "credential_unavailable", message: credentialUnavailable(`placeholder "${placeholder.name}"`, error).message };
      return { close: 1011, reason: "credential_unavailable" };
    }
    text = replacePlaceholder(text, placeholder.placeholder, Buffer.from(value, "utf8").toString("latin1"));
    changed = true;
    if (!exchange.placeholders.includes(placeholder.name)) exchange.placeholders.push(placeholder.name);
    if (!exchange.injectedSecrets.includes(value)) exchange.injectedSecrets.push(value);
  }
  if (changed) message.data = Buffer.from(text, "latin1");
  return [message];
}

/**
 * Placeholder substitution: the sandbox holds a fake value, the upstream gets the real one.
 * A placeholder seen on its way to a host not listed for it is refused before the policy
 * even looks (exfiltration); the real value goes on only once the request is allowed.
 */
export const placeholders: Stage = {
  name: "placeholders",
  active: (state) => state.policy.placeholders.length > 0,
  requestHeaders(flow: Flow) {
    // An upgrade's stream is not a body: its messages are read by webSocketMessage.
    if (flow.upgrade) return;
    const start = bodyStartToRead(flow.state.policy.placeholders, flow.request.hasBody);
    if (start) flow.readBodyStart = Math.max(flow.readBodyStart ?? 0, start);
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
  // Any placeholder could be carried off in a message: sessions are read whenever there are placeholders.
  webSocketSession: (flow: Flow) => flow.state.policy.placeholders.length > 0,
  webSocketMessage: placeholdersInMessage,
};
