import { Transform, type TransformCallback } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import { apiErrorEvent } from "./api-errors.js";
import { apiForBody, parseArguments, UnparseableLlmResponse, type LlmApi, type ToolCall } from "./tool-calls.js";

export const MAX_LLM_BODY_BYTES = 10 * 1024 * 1024;

interface SseEvent {
  raw: string;
  event: string | undefined;
  data: string;
}

export type Denial = { kind: "tool"; call: ToolCall; message: string; rule: string } | { kind: "unparseable"; message: string };

/** Decides a complete tool call: a denial message and rule, or undefined to let it through. */
export type ToolJudge = (call: ToolCall) => { message: string; rule: string } | undefined;

function parseEvent(raw: string): SseEvent {
  let event: string | undefined;
  const data: string[] = [];
  for (const line of raw.split(/\r?\n/)) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return { raw, event, data: data.join("\n") };
}

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);

interface PendingCall {
  name: string;
  args: string;
  input?: unknown;
}

/**
 * Watches an LLM API's server-sent events. Text and everything else flows to the client as
 * each event completes; an event that starts a tool call is held, with everything after it,
 * until the call is complete. Then the call is judged: allowed, the held events flow on;
 * denied, the stream ends with the API's own error event. Anything that cannot be parsed
 * ends the stream the same way (fail closed).
 */
export class LlmSseGuard extends Transform {
  private readonly decoder = new StringDecoder("utf8");
  private buffer = "";
  private held: string[] = [];
  private heldBytes = 0;
  private holding = false;
  private finished = false;
  private readonly calls = new Map<string, PendingCall>();

  constructor(
    private api: LlmApi | undefined,
    private readonly judge: ToolJudge,
    private readonly onDenied: (denial: Denial, api: LlmApi | undefined) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.finished) return callback();
    this.buffer += this.decoder.write(chunk);
    let boundary: RegExpExecArray | null;
    const separator = /\r?\n\r?\n/g;
    let consumed = 0;
    try {
      while ((boundary = separator.exec(this.buffer)) !== null) {
        const raw = this.buffer.slice(consumed, boundary.index + boundary[0].length);
        consumed = boundary.index + boundary[0].length;
        this.handle(parseEvent(raw));
        if (this.finished) break;
      }
      this.buffer = this.buffer.slice(consumed);
      if (this.buffer.length > MAX_LLM_BODY_BYTES) throw new UnparseableLlmResponse("an event larger than 10 MiB");
    } catch (error) {
      this.deny({ kind: "unparseable", message: `LLM response could not be checked: ${(error as Error).message}` });
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (!this.finished) {
      const rest = this.buffer + this.decoder.end();
      if (rest.trim() !== "") {
        try {
          this.handle(parseEvent(rest));
        } catch (error) {
          this.deny({ kind: "unparseable", message: `LLM response could not be checked: ${(error as Error).message}` });
        }
      }
      // A stream that ends in the middle of a tool call never shows it to the client.
      if (!this.finished && this.holding) this.deny({ kind: "unparseable", message: "LLM stream ended inside a tool call" });
    }
    callback();
  }

  private pass(raw: string): void {
    if (this.holding) {
      this.held.push(raw);
      this.heldBytes += raw.length;
      if (this.heldBytes > MAX_LLM_BODY_BYTES) throw new UnparseableLlmResponse("a tool call larger than 10 MiB");
    } else {
      this.push(raw);
    }
  }

  private release(): void {
    this.holding = false;
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    for (const raw of held) this.push(raw);
  }

  private deny(denial: Denial): void {
    if (this.finished) return;
    this.finished = true;
    this.held = [];
    const message = denial.message;
    this.push(apiErrorEvent(this.api, message, denial.kind === "tool" ? denial.rule : null));
    this.push(null);
    this.onDenied(denial, this.api);
  }

  /** Judges every pending call; returns false when one was denied. */
  private judgeAll(): boolean {
    for (const pending of this.calls.values()) {
      const call: ToolCall = { name: pending.name, input: pending.input ?? parseArguments(pending.args, pending.name) };
      const verdict = this.judge(call);
      if (verdict) {
        this.deny({ kind: "tool", call, ...verdict });
        return false;
      }
    }
    this.calls.clear();
    return true;
  }

  private handle(event: SseEvent): void {
    if (event.data === "" && event.event === undefined) {
      this.pass(event.raw); // comments and keep-alives
      return;
    }
    if (event.data.trim() === "[DONE]") {
      if (this.holding) {
        this.pass(event.raw);
        if (this.judgeAll()) this.release();
        return;
      }
      this.pass(event.raw);
      return;
    }
    let data: unknown;
    try {
      data = JSON.parse(event.data);
    } catch {
      throw new UnparseableLlmResponse(`an event whose data is not JSON`);
    }
    this.api ??= apiForBody(data);
    if (!isObject(data)) throw new UnparseableLlmResponse("an event whose data is not a JSON object");
    if (this.api === "anthropic") this.anthropic(event, data);
    else if (this.api === "openai-chat") this.openaiChat(event, data);
    else if (this.api === "openai-responses") this.openaiResponses(event, data);
    else if (isObject(data.error)) this.pass(event.raw);
    else throw new UnparseableLlmResponse("events of an unknown API");
  }

  private anthropic(event: SseEvent, data: Json): void {
    const type = data.type;
    const block = isObject(data.content_block) ? data.content_block : undefined;
    if (type === "content_block_start" && block && (block.type === "tool_use" || block.type === "server_tool_use")) {
      this.holding = true;
      const input = isObject(block.input) && Object.keys(block.input).length > 0 ? block.input : undefined;
      this.calls.set(String(data.index), { name: String(block.name ?? ""), args: "", input });
      this.pass(event.raw);
      return;
    }
    const pending = this.calls.get(String(data.index));
    if (type === "content_block_delta" && pending && isObject(data.delta) && data.delta.type === "input_json_delta") {
      pending.args += String(data.delta.partial_json ?? "");
      this.pass(event.raw);
      return;
    }
    this.pass(event.raw);
    if (type === "content_block_stop" && pending) {
      if (pending.args !== "") pending.input = parseArguments(pending.args, pending.name);
      if (this.judgeAll()) this.release();
    }
  }

  private openaiChat(event: SseEvent, data: Json): void {
    if (isObject(data.error)) {
      this.pass(event.raw);
      return;
    }
    let finished = false;
    for (const choice of Array.isArray(data.choices) ? data.choices : []) {
      if (!isObject(choice)) continue;
      const delta = isObject(choice.delta) ? choice.delta : undefined;
      for (const call of Array.isArray(delta?.tool_calls) ? delta.tool_calls : []) {
        if (!isObject(call)) continue;
        this.holding = true;
        const key = `${String(choice.index ?? 0)}:${String(call.index ?? 0)}`;
        const pending = this.calls.get(key) ?? { name: "", args: "" };
        const fn = isObject(call.function) ? call.function : {};
        if (typeof fn.name === "string") pending.name += fn.name;
        if (typeof fn.arguments === "string") pending.args += fn.arguments;
        this.calls.set(key, pending);
      }
      if (choice.finish_reason !== null && choice.finish_reason !== undefined) finished = true;
    }
    this.pass(event.raw);
    if (finished && this.holding && this.judgeAll()) this.release();
  }

  private openaiResponses(event: SseEvent, data: Json): void {
    const type = typeof data.type === "string" ? data.type : event.event;
    const item = isObject(data.item) ? data.item : undefined;
    const isCall = item && (item.type === "function_call" || item.type === "custom_tool_call");
    if (type === "response.output_item.added" && isCall) {
      this.holding = true;
      this.calls.set(String(data.output_index), { name: String(item.name ?? ""), args: "" });
      this.pass(event.raw);
      return;
    }
    this.pass(event.raw);
    if (type === "response.output_item.done" && isCall) {
      const pending = this.calls.get(String(data.output_index)) ?? { name: "", args: "" };
      pending.name = String(item.name ?? pending.name);
      pending.input = item.type === "function_call" ? parseArguments(item.arguments, pending.name) : (item.input ?? "");
      this.calls.set(String(data.output_index), pending);
      if (this.judgeAll()) this.release();
    }
  }
}
