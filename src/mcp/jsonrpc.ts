import type { ToolCall } from "../llm/tool-calls.js";
import { scanJson } from "./json-scan.js";

/** Request bodies (and answers) portcullis reads whole on an MCP host, like LLM JSON. */
export const MAX_MCP_BODY_BYTES = 10 * 1024 * 1024;

/** The JSON-RPC error code of a tool call refused by policy (an implementation-defined server error). */
export const POLICY_DENIED_CODE = -32001;

export type RpcId = string | number | null;

/** One JSON-RPC message of a request body. */
export interface RpcMessage {
  /** The message's own JSON text, as the client wrote it (forwarded unchanged when kept in a batch). */
  readonly raw: string;
  /** Requests and notifications. */
  readonly method: string | undefined;
  /** Requests and responses; undefined for a notification. */
  readonly id: RpcId | undefined;
  /** A tools/call: the tool and its arguments. */
  readonly call: ToolCall | undefined;
}

export interface RpcBody {
  readonly batch: boolean;
  readonly messages: readonly RpcMessage[];
}

/** A body that is not JSON-RPC 2.0: refused, never forwarded (fail closed). */
export class NotJsonRpc extends Error {}

export type Json = Record<string, unknown>;
export const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);

// fatal: bytes that are not UTF-8 are refused; ignoreBOM: a byte-order mark is kept, so JSON.parse refuses it too.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The JSON text of a body, parsed; refuses what is not UTF-8 JSON. */
export function parseJsonText(body: Buffer): { text: string; value: unknown } {
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw new NotJsonRpc("the body is not UTF-8");
  }
  try {
    return { text, value: JSON.parse(text) as unknown };
  } catch {
    throw new NotJsonRpc("the body is not JSON");
  }
}

function toolCall(params: unknown, where: string): ToolCall {
  if (!isObject(params) || typeof params.name !== "string") throw new NotJsonRpc(`${where} is a tools/call without a tool name`);
  if (params.arguments !== undefined && !isObject(params.arguments)) throw new NotJsonRpc(`${where} is a tools/call whose arguments are not an object`);
  return { name: params.name, input: params.arguments ?? {} };
}

function message(value: unknown, raw: string, where: string): RpcMessage {
  if (!isObject(value) || value.jsonrpc !== "2.0") throw new NotJsonRpc(`${where} is not a JSON-RPC 2.0 message`);
  const id = value.id;
  if (id !== undefined && id !== null && typeof id !== "string" && typeof id !== "number") throw new NotJsonRpc(`${where} has an id that is neither a string nor a number`);
  const isResponse = "result" in value || "error" in value;
  if ("method" in value) {
    if (typeof value.method !== "string") throw new NotJsonRpc(`${where} has a method that is not a string`);
    if (isResponse) throw new NotJsonRpc(`${where} is both a request and a response`);
    if (value.params !== undefined && (typeof value.params !== "object" || value.params === null)) throw new NotJsonRpc(`${where} has params that are neither an object nor an array`);
    return { raw, method: value.method, id: id as RpcId | undefined, call: value.method === "tools/call" ? toolCall(value.params, where) : undefined };
  }
  if (id === undefined || ("result" in value && "error" in value) || !isResponse) throw new NotJsonRpc(`${where} is neither a request, a notification nor a response`);
  return { raw, method: undefined, id: id as RpcId, call: undefined };
}

/**
 * A request body as JSON-RPC 2.0: one message or a batch. Anything else (not UTF-8, not JSON,
 * an empty batch, a key written twice, which parsers read differently) throws NotJsonRpc.
 */
export function parseRpcBody(body: Buffer): RpcBody {
  const { text, value } = parseJsonText(body);
  const scan = scanJson(text);
  if (scan.duplicateKey !== undefined) throw new NotJsonRpc(`the body repeats the key "${scan.duplicateKey}"`);
  if (!Array.isArray(value)) return { batch: false, messages: [message(value, text.trim(), "the body")] };
  if (value.length === 0) throw new NotJsonRpc("the body is an empty batch");
  const raws = scan.elements!;
  return { batch: true, messages: value.map((item, index) => message(item, raws[index]!, `message ${index + 1} of the batch`)) };
}

/** The body that forwards these messages of a batch (each as the client wrote it). */
export function batchText(messages: readonly RpcMessage[]): string {
  return `[${messages.map((kept) => kept.raw).join(",")}]`;
}

/** The JSON-RPC error that answers a tool call refused by policy (SPEC section 9). */
export function policyDeniedError(id: RpcId, message: string, rule: string, tool: string): string {
  return JSON.stringify({ jsonrpc: "2.0", id, error: { code: POLICY_DENIED_CODE, message: `policy_denied: ${message}`, data: { type: "policy_denied", rule, tool } } });
}

const distinct = (values: readonly string[]) => [...new Set(values)];

/**
 * What the audit line's `mcp` says of a body: the method (a response the client sends, to a
 * server's request, counts as "response"), and the tool of a tools/call. A batch lists its
 * distinct methods, and its distinct tools, in order, joined by ",".
 */
export function describeBody(body: RpcBody): { method: string; tool?: string } {
  const method = distinct(body.messages.map((item) => item.method ?? "response")).join(",");
  const tools = distinct(body.messages.flatMap((item) => (item.call ? [item.call.name] : [])));
  return tools.length ? { method, tool: tools.join(",") } : { method };
}
