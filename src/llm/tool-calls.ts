export type LlmApi = "anthropic" | "openai-chat" | "openai-responses";

export interface ToolCall {
  name: string;
  input: unknown;
}

/** Thrown when a body under an llm rule cannot be understood: the response is denied (fail closed). */
export class UnparseableLlmResponse extends Error {}

function apiOfPath(path: string): LlmApi | undefined {
  const pathname = path.split("?")[0] ?? "";
  if (/\/messages\/?$/.test(pathname)) return "anthropic";
  if (/\/chat\/completions\/?$/.test(pathname)) return "openai-chat";
  if (/\/responses\/?$/.test(pathname)) return "openai-responses";
  return undefined;
}

/**
 * The API the readings of the path name (an upstream may read "/v1/messages;x" as /v1/messages).
 * Readings that name two APIs name none: the answer's own shape then decides, as the client
 * cannot choose how its usage is read by how it spells the path.
 */
export function apiForPath(pathReadings: readonly string[]): LlmApi | undefined {
  let found: LlmApi | undefined;
  for (const path of pathReadings) {
    const api = apiOfPath(path);
    if (api === undefined || api === found) continue;
    if (found !== undefined) return undefined;
    found = api;
  }
  return found;
}

export type Json = Record<string, unknown>;
export const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);

/** Which API a JSON body (or one SSE event's data) belongs to, from its shape. */
export function apiForBody(body: unknown): LlmApi | undefined {
  if (!isObject(body)) return undefined;
  const type = typeof body.type === "string" ? body.type : "";
  if (type === "message" || type.startsWith("message_") || type.startsWith("content_block_") || type === "ping") return "anthropic";
  if (body.object === "response" || type.startsWith("response.")) return "openai-responses";
  if (Array.isArray(body.choices) || body.object === "chat.completion" || body.object === "chat.completion.chunk") return "openai-chat";
  return undefined;
}

/** OpenAI sends tool arguments as a JSON string; one that does not parse cannot be judged. */
export function parseArguments(text: unknown, tool: string): unknown {
  if (typeof text !== "string") return text ?? {};
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new UnparseableLlmResponse(`arguments of tool call "${tool}" are not valid JSON`);
  }
}

function named(name: unknown, where: string): string {
  if (typeof name !== "string" || name === "") throw new UnparseableLlmResponse(`${where} has no tool name`);
  return name;
}

/** Anthropic content blocks the client acts on or that call tools: tool_use, server_tool_use, mcp_tool_use, ... */
export function isToolBlock(block: unknown): block is Json {
  return isObject(block) && typeof block.type === "string" && block.type.endsWith("_use");
}

/** OpenAI Responses output items that call something: function_call, custom_tool_call, local_shell_call, mcp_call, computer_call, ... */
export function isCallItem(item: unknown): item is Json {
  return isObject(item) && typeof item.type === "string" && item.type.endsWith("_call");
}

/** A Responses call item as a tool call: its name (or its type, for built-in tools) and its input. */
export function callFromItem(item: Json): ToolCall {
  const name = typeof item.name === "string" && item.name !== "" ? item.name : String(item.type).replace(/_call$/, "");
  const input = typeof item.arguments === "string" ? parseArguments(item.arguments, name) : (item.action ?? item.input ?? item.arguments ?? {});
  return { name, input };
}

/**
 * Every tool call in a complete (non-streaming) response, whatever API its shape says it is:
 * Anthropic content blocks, Chat Completions tool_calls and legacy function_call, Responses
 * output items. Each extractor only reads its own fields, so no shape can hide another.
 */
export function toolCallsInBody(body: unknown): ToolCall[] {
  if (!isObject(body)) throw new UnparseableLlmResponse("response body is not a JSON object");
  const calls: ToolCall[] = [];
  for (const block of Array.isArray(body.content) ? body.content : []) {
    if (isToolBlock(block)) calls.push({ name: named(block.name, `a ${String(block.type)} block`), input: block.input ?? {} });
  }
  for (const choice of Array.isArray(body.choices) ? body.choices : []) {
    const message = isObject(choice) && isObject(choice.message) ? choice.message : undefined;
    for (const call of Array.isArray(message?.tool_calls) ? message.tool_calls : []) {
      const fn = isObject(call) && isObject(call.function) ? call.function : isObject(call) && isObject(call.custom) ? call.custom : undefined;
      const name = named(fn?.name, "a tool_calls entry");
      calls.push({ name, input: parseArguments(fn?.arguments ?? fn?.input, name) });
    }
    if (isObject(message?.function_call)) {
      const name = named(message.function_call.name, "a function_call");
      calls.push({ name, input: parseArguments(message.function_call.arguments, name) });
    }
  }
  for (const item of Array.isArray(body.output) ? body.output : []) {
    if (isCallItem(item)) calls.push(callFromItem(item));
  }
  return calls;
}
