import type { IncomingMessage, ServerResponse } from "node:http";
import { brotliCompressSync, deflateSync, gzipSync } from "node:zlib";

/** Recorded-shape responses of the Anthropic Messages, OpenAI Chat Completions and OpenAI Responses APIs. */
export type Api = "anthropic" | "openai-chat" | "openai-responses";

export const PATHS: Record<Api, string> = { anthropic: "/v1/messages", "openai-chat": "/v1/chat/completions", "openai-responses": "/v1/responses" };

const sse = (events: [string | null, unknown][]) =>
  events.map(([event, data]) => `${event ? `event: ${event}\n` : ""}data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);

/** Tokens a fake answer reports (recorded shapes: Anthropic's cache fields, OpenAI's cached_tokens details). */
export interface FakeUsage {
  input: number;
  output: number;
  cacheRead?: number;
  cacheWrite?: number;
}

export const DEFAULT_USAGE: FakeUsage = { input: 5, output: 9 };

function anthropicUsage(usage: FakeUsage, output = usage.output): Record<string, number> {
  return { input_tokens: usage.input, output_tokens: output, ...(usage.cacheRead !== undefined ? { cache_read_input_tokens: usage.cacheRead } : {}), ...(usage.cacheWrite !== undefined ? { cache_creation_input_tokens: usage.cacheWrite } : {}) };
}

function chatUsage(usage: FakeUsage): Record<string, unknown> {
  return { prompt_tokens: usage.input, completion_tokens: usage.output, total_tokens: usage.input + usage.output, prompt_tokens_details: { cached_tokens: usage.cacheRead ?? 0 } };
}

export function responsesUsage(usage: FakeUsage): Record<string, unknown> {
  return { input_tokens: usage.input, input_tokens_details: { cached_tokens: usage.cacheRead ?? 0 }, output_tokens: usage.output, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: usage.input + usage.output };
}

export function jsonBody(api: Api, command: string, tool = "bash", usage: FakeUsage = DEFAULT_USAGE): unknown {
  if (api === "anthropic") {
    return { id: "msg_1", type: "message", role: "assistant", model: "claude-x", content: [{ type: "text", text: "Running it. ✓" }, { type: "tool_use", id: "toolu_1", name: tool, input: { command } }], stop_reason: "tool_use", usage: anthropicUsage(usage) };
  }
  if (api === "openai-chat") {
    return { id: "chatcmpl-1", object: "chat.completion", model: "gpt-x", choices: [{ index: 0, message: { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: tool, arguments: JSON.stringify({ command }) } }] }, finish_reason: "tool_calls" }], usage: chatUsage(usage) };
  }
  return { id: "resp_1", object: "response", status: "completed", model: "gpt-r", output: [{ type: "message", id: "msg_1", role: "assistant", content: [{ type: "output_text", text: "Running it." }] }, { type: "function_call", id: "fc_1", call_id: "call_1", name: tool, arguments: JSON.stringify({ command }) }], usage: responsesUsage(usage) };
}

/** The events of a streamed answer: text first, then a tool call whose arguments arrive in pieces. */
export function sseEvents(api: Api, command: string, tool = "bash", usage: FakeUsage = DEFAULT_USAGE): { text: string[]; rest: string[] } {
  const args = JSON.stringify({ command });
  const half = Math.floor(args.length / 2);
  if (api === "anthropic") {
    return {
      text: sse([
        ["message_start", { type: "message_start", message: { id: "msg_1", type: "message", role: "assistant", content: [], model: "claude-x", stop_reason: null, usage: anthropicUsage(usage, 1) } }],
        ["content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }],
        ["content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Running it. ✓" } }],
      ]),
      rest: sse([
        ["content_block_stop", { type: "content_block_stop", index: 0 }],
        ["content_block_start", { type: "content_block_start", index: 1, content_block: { type: "tool_use", id: "toolu_1", name: tool, input: {} } }],
        ["content_block_delta", { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: args.slice(0, half) } }],
        ["content_block_delta", { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: args.slice(half) } }],
        ["content_block_stop", { type: "content_block_stop", index: 1 }],
        ["message_delta", { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: usage.output } }],
        ["message_stop", { type: "message_stop" }],
      ]),
    };
  }
  if (api === "openai-chat") {
    const chunk = (delta: unknown, finish: string | null = null) => ({ id: "chatcmpl-1", object: "chat.completion.chunk", model: "gpt-x", choices: [{ index: 0, delta, finish_reason: finish }] });
    return {
      text: sse([[null, chunk({ role: "assistant", content: "Running it. ✓" })]]),
      rest: sse([
        [null, chunk({ tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: tool, arguments: "" } }] })],
        [null, chunk({ tool_calls: [{ index: 0, function: { arguments: args.slice(0, half) } }] })],
        [null, chunk({ tool_calls: [{ index: 0, function: { arguments: args.slice(half) } }] })],
        [null, chunk({}, "tool_calls")],
        // stream_options.include_usage: one last chunk with no choices and the usage.
        [null, { id: "chatcmpl-1", object: "chat.completion.chunk", model: "gpt-x", choices: [], usage: chatUsage(usage) }],
        [null, "[DONE]"],
      ]),
    };
  }
  return {
    text: sse([
      ["response.created", { type: "response.created", sequence_number: 0, response: { id: "resp_1", object: "response", status: "in_progress", output: [] } }],
      ["response.output_text.delta", { type: "response.output_text.delta", sequence_number: 1, item_id: "msg_1", output_index: 0, content_index: 0, delta: "Running it. ✓" }],
    ]),
    rest: sse([
      ["response.output_item.added", { type: "response.output_item.added", sequence_number: 2, output_index: 1, item: { type: "function_call", id: "fc_1", call_id: "call_1", name: tool, arguments: "" } }],
      ["response.function_call_arguments.delta", { type: "response.function_call_arguments.delta", sequence_number: 3, item_id: "fc_1", output_index: 1, delta: args.slice(0, half) }],
      ["response.function_call_arguments.delta", { type: "response.function_call_arguments.delta", sequence_number: 4, item_id: "fc_1", output_index: 1, delta: args.slice(half) }],
      ["response.output_item.done", { type: "response.output_item.done", sequence_number: 5, output_index: 1, item: { type: "function_call", id: "fc_1", call_id: "call_1", name: tool, arguments: args } }],
      ["response.completed", { type: "response.completed", sequence_number: 6, response: { id: "resp_1", object: "response", status: "completed", model: "gpt-r", usage: responsesUsage(usage) } }],
    ]),
  };
}

export interface FakeRequest {
  stream?: boolean;
  command?: string;
  tool?: string;
  encoding?: "gzip" | "br" | "deflate";
  /** SSE: write in pieces this many bytes long (awkward boundaries, split UTF-8 included) */
  chunk?: number;
  raw?: string;
  /** SSE: wait for /release/<id> before sending what follows the text */
  hold?: string;
  /** the tokens the answer reports */
  usage?: FakeUsage;
}

const releases = new Map<string, () => void>();
const waiting = new Map<string, Promise<void>>();

function gate(id: string): Promise<void> {
  let promise = waiting.get(id);
  if (!promise) {
    promise = new Promise<void>((resolve) => releases.set(id, resolve));
    waiting.set(id, promise);
  }
  return promise;
}

export function release(id: string): void {
  void gate(id);
  releases.get(id)!();
}

function encode(body: Buffer, encoding: FakeRequest["encoding"]): Buffer {
  if (encoding === "gzip") return gzipSync(body);
  if (encoding === "br") return brotliCompressSync(body);
  if (encoding === "deflate") return deflateSync(body);
  return body;
}

async function writeInPieces(res: ServerResponse, data: Buffer, size: number): Promise<void> {
  for (let i = 0; i < data.length; i += size) {
    res.write(data.subarray(i, i + size));
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** A request handler that answers like the three APIs, chosen by path. */
export function fakeLlmHandler(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", async () => {
    const api = (Object.entries(PATHS).find(([, path]) => req.url?.startsWith(path))?.[0] ?? "anthropic") as Api;
    const ask = JSON.parse(Buffer.concat(chunks).toString() || "{}") as FakeRequest;
    const command = ask.command ?? "ls -la";
    const headers: Record<string, string> = {};
    if (ask.encoding) headers["Content-Encoding"] = ask.encoding;
    if (!ask.stream) {
      const body = encode(Buffer.from(ask.raw ?? JSON.stringify(jsonBody(api, command, ask.tool, ask.usage))), ask.encoding);
      res.writeHead(200, { ...headers, "Content-Type": "application/json", "Content-Length": String(body.length) });
      res.end(body);
      return;
    }
    res.writeHead(200, { ...headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    const { text, rest } = ask.raw !== undefined ? { text: [ask.raw], rest: [] } : sseEvents(api, command, ask.tool, ask.usage);
    if (ask.encoding) {
      const body = encode(Buffer.from([...text, ...rest].join("")), ask.encoding);
      await writeInPieces(res, body, ask.chunk ?? 64);
      res.end();
      return;
    }
    await writeInPieces(res, Buffer.from(text.join("")), ask.chunk ?? 1 << 20);
    if (ask.hold) await gate(ask.hold);
    await writeInPieces(res, Buffer.from(rest.join("")), ask.chunk ?? 1 << 20);
    res.end();
  });
}
