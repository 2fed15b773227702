export type LlmApi = "anthropic" | "openai-chat" | "openai-responses";

export interface ToolCall {
  name: string;
  input: unknown;
}

/** Thrown when a body under an llm rule cannot be understood: the response is denied (fail closed). */
export class UnparseableLlmResponse extends Error {}

export function apiForPath(path: string): LlmApi | undefined {
  const pathname = path.split("?")[0] ?? "";
  if (/\/messages\/?$/.test(pathname)) return "anthropic";
  if (/\/chat\/completions\/?$/.test(pathname)) return "openai-chat";
  if (/\/responses\/?$/.test(pathname)) return "openai-responses";
  return undefined;
}

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);

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

/** Every tool call in a complete (non-streaming) response of the given API. */
export function toolCallsInBody(api: LlmApi, body: unknown): ToolCall[] {
  if (!isObject(body)) throw new UnparseableLlmResponse("response body is not a JSON object");
  const calls: ToolCall[] = [];
  if (api === "anthropic") {
    for (const block of Array.isArray(body.content) ? body.content : []) {
      if (isObject(block) && (block.type === "tool_use" || block.type === "server_tool_use")) {
        calls.push({ name: named(block.name, "a tool_use block"), input: block.input ?? {} });
      }
    }
  } else if (api === "openai-chat") {
    for (const choice of Array.isArray(body.choices) ? body.choices : []) {
      const message = isObject(choice) && isObject(choice.message) ? choice.message : undefined;
      for (const call of Array.isArray(message?.tool_calls) ? message.tool_calls : []) {
        const fn = isObject(call) && isObject(call.function) ? call.function : undefined;
        const name = named(fn?.name, "a tool_calls entry");
        calls.push({ name, input: parseArguments(fn?.arguments, name) });
      }
    }
  } else {
    for (const item of Array.isArray(body.output) ? body.output : []) {
      if (isObject(item) && (item.type === "function_call" || item.type === "custom_tool_call")) {
        const name = named(item.name, "a function_call item");
        calls.push({ name, input: item.type === "function_call" ? parseArguments(item.arguments, name) : (item.input ?? "") });
      }
    }
  }
  return calls;
}
