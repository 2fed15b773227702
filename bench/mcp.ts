// The MCP scenario of bench/run.ts, client side: the official SDK's Client over its
// StreamableHTTPClientTransport, with a custom fetch (undici's fetch and the path's dispatcher:
// an Agent direct, a ProxyAgent through a proxy), the way an agent's MCP client reaches a server
// through portcullis. Each client: its own dispatcher (one connection), initialize, a few
// warm-up calls, then `calls` sequential tools/call round trips of the `echo` tool; `clients`
// of them run at the same time.
import { performance } from "node:perf_hooks";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import { fetch as undiciFetch, type Dispatcher } from "undici";
import { percentile } from "./lib.js";

export interface McpPath {
  /** https://HOST:PORT/mcp */
  url: string;
  /** A new dispatcher (one connection) for one client: direct or through the proxy. */
  dispatcher(): Dispatcher;
  /** CPU seconds the proxy's process has used so far; none for direct. */
  cpu?: () => number;
  /** Counts each HTTP request sent (the audit log check). */
  sent(count: number): void;
}

interface Connected {
  client: Client;
  dispatcher: Dispatcher;
}

async function connect(path: McpPath): Promise<Connected> {
  const dispatcher = path.dispatcher();
  const fetch = ((url: string | URL, init?: RequestInit) => {
    path.sent(1);
    return undiciFetch(url, { ...(init as object), dispatcher });
  }) as unknown as FetchLike;
  const client = new Client({ name: "bench-agent", version: "1.0.0" });
  try {
    await client.connect(new StreamableHTTPClientTransport(new URL(path.url), { fetch }));
  } catch (error) {
    await dispatcher.close().catch(() => undefined);
    throw error;
  }
  return { client, dispatcher };
}

async function disconnect({ client, dispatcher }: Connected): Promise<void> {
  await client.close().catch(() => undefined);
  await dispatcher.close().catch(() => undefined);
}

async function echoOnce(client: Client, text: string): Promise<void> {
  const result = await client.callTool({ name: "echo", arguments: { text } });
  const content = result.content as { type: string; text?: string }[] | undefined;
  if (result.isError || content?.[0]?.text !== text) throw new Error(`echo answered ${JSON.stringify(result).slice(0, 200)}`);
}

/** `clients` MCP clients at once, each `calls` sequential tools/call round trips; calls/s, p50 (ms), proxy CPU per call (µs). */
export async function mcpCalls(path: McpPath, p: { clients: number; calls: number; warmup: number }) {
  const connected: Connected[] = [];
  try {
    for (let i = 0; i < p.clients; i++) connected.push(await connect(path));
    // The optional GET stream the client asks for after `initialized` (answered 405) is under way: let it settle.
    await Promise.all(connected.map(async ({ client }, c) => {
      for (let i = 0; i < p.warmup; i++) await echoOnce(client, `warm-up ${c}.${i}`);
    }));
    const latencies: number[] = [];
    const cpuBefore = path.cpu?.() ?? NaN;
    const started = performance.now();
    await Promise.all(
      connected.map(async ({ client }, c) => {
        for (let i = 0; i < p.calls; i++) {
          const t0 = performance.now();
          await echoOnce(client, `call ${c}.${i} of the portcullis benchmark`);
          latencies.push(performance.now() - t0);
        }
      }),
    );
    const elapsedMs = performance.now() - started;
    const cpu = (path.cpu?.() ?? NaN) - cpuBefore;
    latencies.sort((a, b) => a - b);
    return { cps: latencies.length / (elapsedMs / 1000), p50: percentile(latencies, 50), cpuPerCallUs: (cpu / latencies.length) * 1e6 };
  } finally {
    await Promise.all(connected.map(disconnect));
  }
}

/**
 * Once per run, through the proxy with the mcp rule: tools/list must show only `echo`, and a
 * tools/call of `shell` (not in allow_tools) must come back as the JSON-RPC error -32001
 * policy_denied. Returns what is wrong, or nothing.
 */
export async function checkMcpRule(path: McpPath): Promise<string[]> {
  const problems: string[] = [];
  const connected = await connect(path);
  try {
    const { tools } = await connected.client.listTools();
    const names = tools.map((tool) => tool.name).sort();
    if (names.join(",") !== "echo") problems.push(`tools/list through the mcp rule listed ${JSON.stringify(names)} (only "echo" expected)`);
    const denied = await connected.client.callTool({ name: "shell", arguments: { command: "rm -rf /tmp/bench" } }).then(
      (result) => ({ result }),
      (error: unknown) => ({ error }),
    );
    if ("result" in denied) problems.push(`a tools/call of "shell" (not in allow_tools) was answered: ${JSON.stringify(denied.result).slice(0, 200)}`);
    else if (!(denied.error instanceof McpError) || denied.error.code !== -32001 || !denied.error.message.includes("policy_denied")) {
      problems.push(`a tools/call of "shell" failed, but not with -32001 policy_denied: ${String(denied.error).slice(0, 200)}`);
    }
  } finally {
    await disconnect(connected);
  }
  return problems;
}
