import { Transform, type TransformCallback } from "node:stream";
import { parseSseEvent, SseText, takeSseEvents, type SseEvent } from "../core/sse.js";
import { apiErrorEvent } from "./api-errors.js";
import { apiForBody, callFromItem, isCallItem, isObject, isToolBlock, parseArguments, UnparseableLlmResponse, type Json, type LlmApi, type ToolCall } from "./tool-calls.js";

export const MAX_LLM_BODY_BYTES = 10 * 1024 * 1024;

export type Denial = { kind: "tool"; call: ToolCall; message: string; rule: string } | { kind: "unparseable"; message: string };

/** Decides a complete tool call: a denial message and rule, or undefined to let it through. */
export type ToolJudge = (call: ToolCall) => { message: string; rule: string } | undefined;



interface PendingCall {
  name: string;
  args: string;
  input?: unknown;
  /** The choice (chat) whose finish completes this call. */
  group: string;
}

/**
 * Watches an LLM API's server-sent events. Text and everything else flows to the client as
 * each event completes; an event that starts a tool call is held, with everything after it,
 * until the call is complete. Then the call is judged: allowed, the held events flow on;
 * denied, the stream ends with the API's own error event. Anything that cannot be parsed, or
 * that changes API mid-stream, ends the stream the same way (fail closed).
 */
export class LlmSseGuard extends Transform {
  private readonly text = new SseText();
  private buffer = "";
  private held: string[] = [];
  private heldBytes = 0;
  private finished = false;
  private readonly calls = new Map<string, PendingCall>();
  private readonly judged = new Set<string>();

  constructor(
    private api: LlmApi | undefined,
    private readonly judge: ToolJudge,
    private readonly onDenied: (denial: Denial, api: LlmApi | undefined) => void,
  ) {
    super();
  }

  private get holding(): boolean {
    return this.calls.size > 0;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.finished) return callback();
    this.buffer += this.text.next(chunk);
    this.drain(false);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (!this.finished) {
      this.buffer += this.text.end();
      this.drain(true);
      // A stream that ends in the middle of a tool call never shows it to the client.
      if (!this.finished && this.holding) this.deny({ kind: "unparseable", message: "LLM stream ended inside a tool call" });
      if (!this.finished) this.release();
    }
    callback();
  }

  private drain(atEnd: boolean): void {
    try {
      this.buffer = takeSseEvents(this.buffer, atEnd, (event) => {
        this.handle(event);
        return !this.finished;
      });
      if (this.finished) return;
      if (atEnd && this.buffer.trim() !== "") {
        const rest = this.buffer;
        this.buffer = "";
        this.handle(parseSseEvent(rest));
      }
      if (this.buffer.length > MAX_LLM_BODY_BYTES) throw new UnparseableLlmResponse("an event larger than 10 MiB");
    } catch (error) {
      this.deny({ kind: "unparseable", message: `LLM response could not be checked: ${(error as Error).message}` });
    }
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
    if (this.holding) return;
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    for (const raw of held) this.push(raw);
  }

  private deny(denial: Denial): void {
    if (this.finished) return;
    this.finished = true;
    this.held = [];
    this.push(apiErrorEvent(this.api, denial.message, denial.kind === "tool" ? denial.rule : null));
    this.push(null);
    this.onDenied(denial, this.api);
  }

  private open(key: string, name: string, group: string, input?: unknown): void {
    if (this.judged.has(key)) throw new UnparseableLlmResponse("a tool call continued after it was judged");
    const pending = this.calls.get(key) ?? { name: "", args: "", group };
    pending.name += name;
    if (input !== undefined) pending.input = input;
    this.calls.set(key, pending);
  }

  /** Judges the pending calls of one group (all when group is undefined); false when one was denied. */
  private judgeCalls(group?: string): boolean {
    for (const [key, pending] of this.calls) {
      if (group !== undefined && pending.group !== group) continue;
      if (pending.name === "") throw new UnparseableLlmResponse("a tool call without a name");
      const call: ToolCall = { name: pending.name, input: pending.input ?? parseArguments(pending.args, pending.name) };
      const verdict = this.judge(call);
      if (verdict) {
        this.deny({ kind: "tool", call, ...verdict });
        return false;
      }
      this.calls.delete(key);
      this.judged.add(key);
    }
    this.release();
    return true;
  }

  private handle(event: SseEvent): void {
    if (event.data === undefined) {
      this.pass(event.raw); // comments, keep-alives, retry/id-only events
      return;
    }
    if (event.data.trim() === "[DONE]") {
      this.pass(event.raw);
      if (this.holding) this.judgeCalls();
      return;
    }
    let data: unknown;
    try {
      data = JSON.parse(event.data);
    } catch {
      throw new UnparseableLlmResponse("an event whose data is not JSON");
    }
    if (!isObject(data)) throw new UnparseableLlmResponse("an event whose data is not a JSON object");
    const shape = apiForBody(data);
    if (shape === undefined) {
      // Only an error event may be of no known shape.
      if (isObject(data.error)) return this.pass(event.raw);
      throw new UnparseableLlmResponse("an event of no known API");
    }
    if (this.api !== undefined && shape !== this.api) throw new UnparseableLlmResponse(`a ${shape} event in a ${this.api} stream`);
    this.api = shape;
    if (shape === "anthropic") this.anthropic(event, data);
    else if (shape === "openai-chat") this.openaiChat(event, data);
    else this.openaiResponses(event, data);
  }

  private anthropic(event: SseEvent, data: Json): void {
    const key = `block:${String(data.index)}`;
    const block = data.content_block;
    if (data.type === "content_block_start" && isToolBlock(block)) {
      const input = isObject(block.input) && Object.keys(block.input).length > 0 ? block.input : undefined;
      this.open(key, typeof block.name === "string" ? block.name : "", key, input);
      this.pass(event.raw);
      return;
    }
    const pending = this.calls.get(key);
    if (data.type === "content_block_delta" && pending && isObject(data.delta) && data.delta.type === "input_json_delta") {
      pending.args += String(data.delta.partial_json ?? "");
    }
    this.pass(event.raw);
    if (data.type === "content_block_stop" && pending) {
      if (pending.args !== "") pending.input = parseArguments(pending.args, pending.name);
      this.judgeCalls(key);
    }
  }

  private openaiChat(event: SseEvent, data: Json): void {
    const finished: string[] = [];
    for (const choice of Array.isArray(data.choices) ? data.choices : []) {
      if (!isObject(choice)) continue;
      const group = `choice:${String(choice.index ?? 0)}`;
      const delta = isObject(choice.delta) ? choice.delta : undefined;
      for (const call of Array.isArray(delta?.tool_calls) ? delta.tool_calls : []) {
        if (!isObject(call)) continue;
        const key = `${group}:tool:${String(call.index ?? 0)}`;
        const fn = isObject(call.function) ? call.function : isObject(call.custom) ? call.custom : {};
        this.open(key, typeof fn.name === "string" ? fn.name : "", group);
        const args = fn.arguments ?? fn.input;
        if (typeof args === "string") this.calls.get(key)!.args += args;
      }
      // The legacy `functions` API streams delta.function_call.
      if (isObject(delta?.function_call)) {
        const key = `${group}:function_call`;
        this.open(key, typeof delta.function_call.name === "string" ? delta.function_call.name : "", group);
        if (typeof delta.function_call.arguments === "string") this.calls.get(key)!.args += delta.function_call.arguments;
      }
      if (choice.finish_reason !== null && choice.finish_reason !== undefined) finished.push(group);
    }
    this.pass(event.raw);
    for (const group of finished) if (!this.judgeCalls(group)) return;
  }

  private openaiResponses(event: SseEvent, data: Json): void {
    const type = typeof data.type === "string" ? data.type : event.event;
    const key = `output:${String(data.output_index)}`;
    if (type === "response.output_item.added" && isCallItem(data.item)) {
      this.open(key, "", key);
      this.pass(event.raw);
      return;
    }
    this.pass(event.raw);
    if (type === "response.output_item.done" && isCallItem(data.item)) {
      const pending = this.calls.get(key) ?? { name: "", args: "", group: key };
      const call = callFromItem(data.item);
      pending.name = call.name;
      pending.input = call.input;
      this.calls.set(key, pending);
      this.judgeCalls(key);
    }
  }
}
