import type { LlmSummary } from "../core/audit-record.js";
import { SseText, takeSseEvents } from "../core/sse.js";
import { isObject, type Json, type LlmApi } from "./tool-calls.js";

/** Every API whose usage portcullis reads: the HTTP ones and the Realtime WebSocket API. */
export type UsageApi = LlmSummary["api"];

/** The most of a JSON answer copied aside to read its usage; a larger one is relayed unread. */
export const MAX_USAGE_JSON_BYTES = 10 * 1024 * 1024;

const count = (value: unknown): number | undefined => (typeof value === "number" && Number.isFinite(value) && value >= 0 ? value : undefined);

/** Sets the fields the API reported; a later report of a field replaces an earlier one (Anthropic's message_delta is cumulative). */
function merge(into: LlmSummary, fields: Omit<LlmSummary, "api">): void {
  for (const [key, value] of Object.entries(fields) as [keyof Omit<LlmSummary, "api">, string | number | undefined][]) {
    if (value !== undefined) (into as unknown as Record<string, unknown>)[key] = value;
  }
}

/** Anthropic Messages `usage`: cache reads and writes are reported apart from input_tokens. */
function anthropicUsage(usage: Json): Omit<LlmSummary, "api"> {
  return {
    input_tokens: count(usage.input_tokens),
    output_tokens: count(usage.output_tokens),
    cache_read_tokens: count(usage.cache_read_input_tokens),
    cache_write_tokens: count(usage.cache_creation_input_tokens),
  };
}

/** OpenAI Chat Completions `usage`: prompt_tokens includes the cached ones. */
function chatUsage(usage: Json): Omit<LlmSummary, "api"> {
  const details = isObject(usage.prompt_tokens_details) ? usage.prompt_tokens_details : {};
  return { input_tokens: count(usage.prompt_tokens), output_tokens: count(usage.completion_tokens), cache_read_tokens: count(details.cached_tokens) };
}

/** OpenAI Responses and Realtime `usage` (input_tokens_details or, in Realtime, input_token_details). */
function responsesUsage(usage: Json): Omit<LlmSummary, "api"> {
  const details = isObject(usage.input_tokens_details) ? usage.input_tokens_details : isObject(usage.input_token_details) ? usage.input_token_details : {};
  return { input_tokens: count(usage.input_tokens), output_tokens: count(usage.output_tokens), cache_read_tokens: count(details.cached_tokens) };
}

const modelOf = (value: unknown): { model?: string } => (typeof value === "string" && value.length > 0 ? { model: value.slice(0, 200) } : {});

/** Which API a JSON answer or event is from when the path did not say. */
function apiOf(body: Json): UsageApi | undefined {
  const type = typeof body.type === "string" ? body.type : "";
  if (type === "message" || type.startsWith("message_")) return "anthropic";
  if (body.object === "chat.completion" || body.object === "chat.completion.chunk") return "openai-chat";
  if (body.object === "response" || type.startsWith("response.")) return "openai-responses";
  return undefined;
}

/**
 * What an LLM API reported about one answer, from its JSON body, its event stream or its
 * WebSocket events, as far as they have been read. Reading never changes what is relayed.
 */
export class UsageTally {
  private summary: LlmSummary | undefined;

  constructor(private readonly hint: UsageApi | undefined) {}

  /** The usage so far (undefined when nothing was recognised). */
  get usage(): LlmSummary | undefined {
    return this.summary;
  }

  private api(body: Json): LlmSummary {
    this.summary ??= { api: this.hint ?? apiOf(body) ?? "openai-chat" };
    return this.summary;
  }

  /** A whole JSON answer (Messages, Chat Completions or Responses object). */
  addAnswer(body: unknown): void {
    if (!isObject(body)) return;
    const api = this.hint ?? apiOf(body);
    if (!api) return;
    const summary = this.api(body);
    merge(summary, modelOf(body.model));
    if (!isObject(body.usage)) return;
    merge(summary, api === "anthropic" ? anthropicUsage(body.usage) : api === "openai-chat" ? chatUsage(body.usage) : responsesUsage(body.usage));
  }

  /**
   * One event of a stream (SSE data or a WebSocket message). True when it completed a response
   * (Responses' response.completed, Realtime's response.done): its usage is then final.
   */
  addEvent(event: unknown): boolean {
    if (!isObject(event)) return false;
    const type = typeof event.type === "string" ? event.type : "";
    if (type === "message_start" && isObject(event.message)) {
      this.addAnswer(event.message);
      return false;
    }
    if (type === "message_delta" && isObject(event.usage)) {
      merge(this.api(event), anthropicUsage(event.usage));
      return false;
    }
    if (type === "session.created" || type === "session.updated") {
      if (isObject(event.session)) merge(this.api(event), modelOf(event.session.model));
      return false;
    }
    if (type === "response.completed" || type === "response.done" || type === "response.incomplete" || type === "response.failed") {
      if (!isObject(event.response)) return false;
      const summary = this.api(event);
      merge(summary, modelOf(event.response.model));
      if (isObject(event.response.usage)) merge(summary, responsesUsage(event.response.usage));
      return true;
    }
    // A Chat Completions chunk: the model on each, usage on the last with stream_options.include_usage.
    if (event.object === "chat.completion.chunk") {
      const summary = this.api(event);
      merge(summary, modelOf(event.model));
      if (isObject(event.usage)) merge(summary, chatUsage(event.usage));
    }
    return false;
  }
}

/** Only events that may carry usage or the model are parsed: the rest of a stream costs a substring test. */
const INTERESTING_EVENTS = new Set(["message_start", "message_delta", "response.completed", "response.done", "response.incomplete", "response.failed"]);

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Reads usage off an event stream as its (decoded) bytes pass, chunk boundaries anywhere. */
export class SseUsageReader {
  readonly tally: UsageTally;
  private readonly text = new SseText();
  private buffer = "";
  private modelSeen = false;

  constructor(api: LlmApi | undefined) {
    this.tally = new UsageTally(api);
  }

  push(chunk: Buffer): void {
    this.buffer = takeSseEvents(this.buffer + this.text.next(chunk), false, (event) => this.take(event.event, event.data));
  }

  end(): void {
    this.buffer = takeSseEvents(this.buffer + this.text.end() + "\n\n", true, (event) => this.take(event.event, event.data));
  }

  private take(name: string | undefined, data: string | undefined): boolean {
    if (data === undefined || data === "[DONE]") return true;
    // Chat Completions chunks have no event name: the first (for the model) and those with usage are read.
    const wanted = name ? INTERESTING_EVENTS.has(name) : !this.modelSeen || data.includes('"usage"');
    if (!wanted) return true;
    const event = parseJson(data);
    this.tally.addEvent(event);
    if (!name && this.tally.usage?.model) this.modelSeen = true;
    return true;
  }
}

/** Reads usage off a JSON answer: a bounded copy of its (decoded) bytes, parsed at the end. */
export class JsonUsageReader {
  readonly tally: UsageTally;
  private readonly chunks: Buffer[] = [];
  private size = 0;

  constructor(api: LlmApi | undefined) {
    this.tally = new UsageTally(api);
  }

  push(chunk: Buffer): void {
    if (this.size > MAX_USAGE_JSON_BYTES) return;
    this.size += chunk.length;
    if (this.size > MAX_USAGE_JSON_BYTES) this.chunks.length = 0;
    else this.chunks.push(chunk);
  }

  end(): void {
    if (this.size > MAX_USAGE_JSON_BYTES || this.size === 0) return;
    this.tally.addAnswer(parseJson(Buffer.concat(this.chunks).toString("utf8")));
  }
}

/**
 * Reads usage off the server events of a WebSocket LLM session (Responses WebSocket mode,
 * Realtime): each completed response's usage as it ends, and the session's total.
 */
export class WebSocketUsageReader {
  private current: UsageTally;
  private model: string | undefined;
  private total: LlmSummary | undefined;

  constructor(private readonly api: UsageApi) {
    this.current = new UsageTally(api);
  }

  /** The session's usage so far: every completed response summed. */
  get usage(): LlmSummary | undefined {
    return this.total;
  }

  /** One server message; returns the usage of the response it completed, if it completed one. */
  push(text: string): LlmSummary | undefined {
    // Most events are deltas: only those that can carry usage or the model are parsed.
    if (!text.includes('"response.') && !text.includes('"session.')) return undefined;
    if (!this.current.addEvent(parseJson(text))) {
      const model = this.current.usage?.model;
      if (model) this.model = model;
      return undefined;
    }
    const done = this.current.usage;
    this.current = new UsageTally(this.api);
    if (!done) return undefined;
    if (!done.model && this.model) done.model = this.model;
    const sum = (a: number | undefined, b: number | undefined) => (a === undefined && b === undefined ? undefined : (a ?? 0) + (b ?? 0));
    const total: LlmSummary = this.total ?? { api: this.api };
    merge(total, {
      model: done.model,
      input_tokens: sum(total.input_tokens, done.input_tokens),
      output_tokens: sum(total.output_tokens, done.output_tokens),
      cache_read_tokens: sum(total.cache_read_tokens, done.cache_read_tokens),
      cache_write_tokens: sum(total.cache_write_tokens, done.cache_write_tokens),
    });
    this.total = total;
    return done;
  }
}

/** What a budget charges for one answer: input plus output tokens, as the API reported them. */
export function chargedTokens(usage: LlmSummary | undefined): number {
  return (usage?.input_tokens ?? 0) + (usage?.output_tokens ?? 0);
}
