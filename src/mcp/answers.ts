import { scanJson } from "./json-scan.js";
import { isObject, NotJsonRpc } from "./jsonrpc.js";

/** Whether the client may see a tool in a tools/list. */
export type ToolFilter = (name: string) => boolean;

/**
 * A message carrying a tools/list result (any page: a `result` with a `tools` list), with the
 * tools the client may not call removed, and entries without a name too (they cannot be
 * judged); undefined when nothing was removed. Any message of that shape is filtered,
 * whatever request it answers, so a resumed stream or a server's own push is covered too.
 */
export function filterToolsList(message: unknown, visible: ToolFilter): unknown {
  if (!isObject(message) || !isObject(message.result) || !Array.isArray(message.result.tools)) return undefined;
  const tools = message.result.tools as unknown[];
  const kept = tools.filter((tool) => isObject(tool) && typeof tool.name === "string" && visible(tool.name));
  if (kept.length === tools.length) return undefined;
  return { ...message, result: { ...message.result, tools: kept } };
}

/**
 * A JSON answer (one message, or a batch of them) as the client gets it: tools lists filtered,
 * and `extra` messages (portcullis' own answers to refused calls of the batch) merged in, the
 * whole becoming a batch; undefined when nothing changes. Messages left as they were keep
 * their bytes. Throws NotJsonRpc for text that is not JSON.
 */
export function rewriteAnswer(text: string, visible: ToolFilter, extra: readonly string[] = []): string | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new NotJsonRpc("the answer is not JSON");
  }
  const scan = scanJson(text);
  // A repeated key is read differently by different clients: what goes on is what portcullis read.
  const normalise = scan.duplicateKey !== undefined;
  const items = Array.isArray(value) ? value : [value];
  const raws = Array.isArray(value) ? scan.elements! : [text.trim()];
  let changed = normalise;
  const parts = items.map((item, index) => {
    const filtered = filterToolsList(item, visible);
    if (filtered !== undefined) changed = true;
    return filtered !== undefined ? JSON.stringify(filtered) : normalise ? JSON.stringify(item) : raws[index]!;
  });
  if (!changed && extra.length === 0) return undefined;
  if (!Array.isArray(value) && extra.length === 0) return parts[0]!;
  return `[${[...parts, ...extra].join(",")}]`;
}
