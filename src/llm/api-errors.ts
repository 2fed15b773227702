import type { LlmApi } from "./tool-calls.js";

/** The error body each API's SDK understands, so the agent sees a readable error (HTTP 400). */
export function apiErrorBody(api: LlmApi | undefined, message: string, rule: string | null, type = "policy_denied"): string {
  if (api === "anthropic") return JSON.stringify({ type: "error", error: { type, message, rule } });
  return JSON.stringify({ error: { message, type, param: null, code: type, rule } });
}

/** The event that ends a stream with that API's error. */
export function apiErrorEvent(api: LlmApi | undefined, message: string, rule: string | null): string {
  if (api === "anthropic") return `event: error\ndata: ${JSON.stringify({ type: "error", error: { type: "policy_denied", message, rule } })}\n\n`;
  if (api === "openai-responses") {
    return `event: error\ndata: ${JSON.stringify({ type: "error", code: "policy_denied", message, param: null, rule })}\n\n`;
  }
  return `data: ${JSON.stringify({ error: { message, type: "policy_denied", param: null, code: "policy_denied", rule } })}\n\n`;
}
