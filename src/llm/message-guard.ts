import type { ToolJudge } from "./sse-guard.js";
import { callFromItem, isCallItem, isObject, UnparseableLlmResponse, type Json } from "./tool-calls.js";

/** The WebSocket APIs whose messages portcullis understands. */
export type WebSocketLlmApi = "openai-responses" | "openai-realtime";

/**
 * The WebSocket API a reading of the path names (an upstream may read "/v1/responses;x" as
 * /v1/responses). Unlike apiForPath, the first one named wins even when readings disagree: both
 * APIs' messages are judged and their usage read the same way, and naming none would let the
 * session pass as a raw relay.
 */
export function webSocketApiForPath(pathReadings: readonly string[]): WebSocketLlmApi | undefined {
  for (const path of pathReadings) {
    const pathname = path.split("?")[0] ?? "";
    if (/\/realtime\/?$/.test(pathname)) return "openai-realtime";
    if (/\/responses\/?$/.test(pathname)) return "openai-responses";
  }
  return undefined;
}

export interface MessageDenial {
  tool: string;
  message: string;
  rule: string;
}

/** The message a client gets instead of a denied tool call; its session stays open. */
export function policyDeniedMessage(denial: MessageDenial): string {
  return JSON.stringify({ type: "error", error: { type: "policy_denied", message: denial.message, rule: denial.rule } });
}

function itemKey(event: Json): string | undefined {
  if (isObject(event.item) && typeof event.item.id === "string") return event.item.id;
  if (typeof event.item_id === "string") return event.item_id;
  if (typeof event.output_index === "number") return `output:${event.output_index}`;
  return undefined;
}

/**
 * Tool calls in the server events of the OpenAI Responses API's WebSocket mode and the
 * Realtime API. Everything flows on as it comes (text deltas are never held) except the events
 * of a call item (`function_call`, any `*_call`): from `response.output_item.added` (or its
 * first argument delta) they are held until `response.output_item.done` completes the call,
 * which is then judged. Allowed: the held events go on in order. Denied: they never reach the
 * client, which gets one policy_denied error message instead; the call is also taken out of
 * the final `response.done` / `response.completed`. Anything that is not a JSON event throws.
 */
export class LlmMessageGuard {
  private readonly held = new Map<string, string[]>();
  private readonly judged = new Set<string>();
  private readonly denied = new Set<string>();

  constructor(private readonly judge: ToolJudge) {}

  /** One server event: what goes to the client now, in order, and any call it denied. */
  push(text: string): { send: string[]; denials: MessageDenial[] } {
    let event: unknown;
    try {
      event = JSON.parse(text);
    } catch {
      throw new UnparseableLlmResponse("a server message is not JSON");
    }
    if (!isObject(event) || typeof event.type !== "string") throw new UnparseableLlmResponse("a server message has no event type");
    const type = event.type;
    if (type === "response.done" || type === "response.completed") return this.final(event, text);
    const key = itemKey(event);
    // A denied call's later events (conversation.item.done, .retrieved, a late argument event) would show it after all.
    // (Items by id only: an output index is reused by the next response.)
    if (key !== undefined && !key.startsWith("output:") && this.denied.has(key)) return { send: [], denials: [] };
    const startsCall = (type === "response.output_item.added" && isCallItem(event.item)) || (type.startsWith("response.function_call_arguments.") && key !== undefined);
    if (key !== undefined && (this.held.has(key) || (startsCall && !this.judged.has(key)))) {
      const held = this.held.get(key) ?? [];
      held.push(text);
      this.held.set(key, held);
      if (type === "response.output_item.done" && isCallItem(event.item)) return this.conclude(key, event.item);
      return { send: [], denials: [] };
    }
    if (type === "response.output_item.done" && isCallItem(event.item) && key !== undefined && !this.judged.has(key)) {
      this.held.set(key, [text]);
      return this.conclude(key, event.item);
    }
    return { send: [text], denials: [] };
  }

  private conclude(key: string, item: Json): { send: string[]; denials: MessageDenial[] } {
    const held = this.held.get(key) ?? [];
    this.held.delete(key);
    this.judged.add(key);
    const call = callFromItem(item);
    const verdict = this.judge(call);
    if (!verdict) return { send: held, denials: [] };
    this.denied.add(key);
    const denial = { tool: call.name, message: verdict.message, rule: verdict.rule };
    return { send: [policyDeniedMessage(denial)], denials: [denial] };
  }

  /** The final event lists every output item again: denied calls come out, unjudged ones are judged. */
  private final(event: Json, text: string): { send: string[]; denials: MessageDenial[] } {
    const response = isObject(event.response) ? event.response : undefined;
    const output = response && Array.isArray(response.output) ? response.output : [];
    const denials: MessageDenial[] = [];
    const kept = output.filter((item, index) => {
      if (!isCallItem(item)) return true;
      const key = typeof item.id === "string" ? item.id : `output:${index}`;
      if (this.denied.has(key)) return false;
      if (this.judged.has(key)) return true;
      this.judged.add(key);
      const call = callFromItem(item);
      const verdict = this.judge(call);
      if (!verdict) return true;
      this.denied.add(key);
      denials.push({ tool: call.name, message: verdict.message, rule: verdict.rule });
      return false;
    });
    // Events still held belong to calls that never completed: they are not released.
    this.held.clear();
    const send = denials.map(policyDeniedMessage);
    if (kept.length === output.length) return { send: [...send, text], denials };
    return { send: [...send, JSON.stringify({ ...event, response: { ...response, output: kept } })], denials };
  }
}
