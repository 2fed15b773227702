import { anyHostMatches } from "../../policy/hosts.js";
import { pathsInScope } from "../../policy/paths.js";
import type { WebSocketRule } from "../../policy/schema.js";
import type { Flow, Stage } from "../stage.js";

/** A message larger than this closes an inspected session with 1009, unless a rule says otherwise. */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

function rulesFor(flow: Flow): WebSocketRule[] {
  const { host } = flow.exchange.target;
  return flow.state.policy.websocket.filter((rule) => anyHostMatches(rule.hosts, host) && pathsInScope(rule.paths, flow.exchange.readings));
}

/** The most any matching `websocket` rule allows in one message. */
export function maxMessageBytes(flow: Flow): number {
  const limits = rulesFor(flow).map((rule) => rule.max_message_bytes);
  return limits.length ? Math.min(...limits) : DEFAULT_MAX_MESSAGE_BYTES;
}

/** `websocket:` rules: `inspect: true` parses a session into messages even when no other stage needs to. */
export const webSocketRules: Stage = {
  name: "websocket-rules",
  active: (state) => state.policy.websocket.length > 0,
  webSocketSession: (flow) => flow.state.policy.websocket.length > 0 && rulesFor(flow).some((rule) => rule.inspect),
};
