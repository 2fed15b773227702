import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fetch as undiciFetch, request } from "undici";
import { z } from "zod";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { SSEServerTransport } from "@modelcontextprotocol/sdk/server/sse.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js";
import { LATEST_PROTOCOL_VERSION, McpError } from "@modelcontextprotocol/sdk/types.js";
import { scanJson } from "../src/mcp/json-scan.js";
import { batchText, parseRpcBody } from "../src/mcp/jsonrpc.js";
import { legacyEndpoint, LegacySessionRegistry } from "../src/mcp/legacy-sessions.js";
import { judgeToolCall } from "../src/mcp/evaluate.js";
import { McpSseFilter } from "../src/mcp/sse.js";
import type { McpRule } from "../src/policy/schema.js";
import { h2Request, h2ThroughProxy } from "./helpers/h2.js";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type AuditLine, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const RULE = "github-mcp-readonly";
const ALL_TOOLS = ["delete_repo", "get_file", "list_files", "list_secrets", "run_command"];
const VISIBLE_TOOLS = ["get_file", "list_files", "run_command"];

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: TestProxy;
/** Every tool call the upstream's handlers ran: a denied call must never appear here. */
const ran: { tool: string; args: Record<string, unknown> }[] = [];
const clients: Client[] = [];

/** The SDK's McpServer with a few tools; each handler records that it ran. */
function makeServer(): McpServer {
  const server = new McpServer({ name: "test-mcp", version: "1.0.0" });
  const tool = (name: string, inputSchema: Record<string, z.ZodString>) =>
    server.registerTool(name, { description: `the ${name} tool`, inputSchema }, async (args: Record<string, unknown>) => {
      ran.push({ tool: name, args });
      return { content: [{ type: "text" as const, text: `${name} ran with ${JSON.stringify(args)}` }] };
    });
  tool("get_file", { path: z.string() });
  tool("list_files", {});
  tool("list_secrets", {});
  tool("run_command", { command: z.string() });
  tool("delete_repo", { repo: z.string() });
  return server;
}

const streamable = new Map<string, StreamableHTTPServerTransport>();
const legacy = new Map<string, SSEServerTransport>();

/** /mcp: Streamable HTTP answering in SSE; /mcp-json: answering in JSON; /sse + /messages: the older HTTP+SSE transport. */
async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "https://localhost");
  if (url.pathname === "/mcp" || url.pathname === "/mcp-json") {
    const sid = req.headers["mcp-session-id"];
    let transport = typeof sid === "string" ? streamable.get(sid) : undefined;
    if (!transport) {
      if (sid !== undefined) return void res.writeHead(404).end("unknown session");
      const created: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: url.pathname === "/mcp-json",
        onsessioninitialized: (id) => void streamable.set(id, created),
      });
      await makeServer().connect(created);
      transport = created;
    }
    await transport.handleRequest(req, res);
    return;
  }
  if (url.pathname === "/sse" && req.method === "GET") {
    const transport = new SSEServerTransport("/messages", res);
    legacy.set(transport.sessionId, transport);
    res.on("close", () => legacy.delete(transport.sessionId));
    await makeServer().connect(transport);
    return;
  }
  if (url.pathname === "/messages" && req.method === "POST") {
    const transport = legacy.get(url.searchParams.get("sessionId") ?? "");
    if (!transport) return void res.writeHead(404).end("unknown session");
    await transport.handlePostMessage(req, res);
    return;
  }
  if (url.pathname === "/gzip-tools") {
    // A tools/list answer in gzip: it must be decoded to be filtered.
    const body = gzipSync(JSON.stringify({ jsonrpc: "2.0", id: 1, result: { tools: ALL_TOOLS.map((name) => ({ name, inputSchema: { type: "object" } })) } }));
    req.resume();
    return void res.writeHead(200, { "Content-Type": "application/json", "Content-Encoding": "gzip", "Content-Length": body.length }).end(body);
  }
  if (url.pathname === "/unlabelled-tools") {
    // A tools/list answer as text/plain (or with no Content-Type, or empty): a client that parses it anyway sees every tool.
    req.resume();
    const type = url.searchParams.get("type");
    const tools = JSON.stringify({ jsonrpc: "2.0", id: 1, result: { tools: ALL_TOOLS.map((name) => ({ name, inputSchema: { type: "object" } })) } });
    const spelling = url.searchParams.get("as");
    const body =
      url.searchParams.get("empty") !== null ? Buffer.alloc(0)
      : url.searchParams.get("accepted") !== null ? Buffer.from("Accepted")
      : spelling === "utf16le-bom" ? Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(tools, "utf16le")])
      : spelling === "utf16be" ? Buffer.from(tools, "utf16le").swap16()
      : spelling === "sse" ? Buffer.from(`event: message\ndata: ${tools}\n\n`)
      : spelling === "prefixed" ? Buffer.from(`)]}'\n${tools}`)
      : Buffer.from(tools);
    return void res.writeHead(Number(url.searchParams.get("status") ?? 200), type ? { "Content-Type": type } : {}).end(body);
  }
  if (url.pathname === "/deep-answer") {
    // A repeated key makes portcullis re-serialise the answer; 20,000 levels are more than JSON.stringify can write.
    req.resume();
    const depth = 20_000;
    const body = `{"jsonrpc":"2.0","id":1,"result":{"x":1,"x":2,"deep":${"[".repeat(depth)}${"]".repeat(depth)}}}`;
    if (url.searchParams.get("sse") !== null) return void res.writeHead(200, { "Content-Type": "text/event-stream" }).end(`event: message\ndata: ${body}\n\n`);
    return void res.writeHead(200, { "Content-Type": "application/json" }).end(body);
  }
  if (url.pathname === "/crafted-sse") {
    // An event stream written the awkward ways the SSE spec allows, in pieces.
    req.resume();
    const tools = JSON.stringify({ jsonrpc: "2.0", id: 1, result: { tools: ALL_TOOLS.map((name) => ({ name, inputSchema: { type: "object" } })) } });
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    if (url.searchParams.get("case") === "unreadable") {
      res.write(`event: message\ndata: ${tools}\n\n`);
      res.write("event: message\ndata: {not json\n\n");
      res.end(`event: message\ndata: ${JSON.stringify({ jsonrpc: "2.0", id: 2, result: { after: true } })}\n\n`);
      return;
    }
    const stream = `\uFEFFdata: ${tools}\r\nid: 41\r\nevent: message\r\n\r\n: a comment\r\rdata: ${JSON.stringify({ jsonrpc: "2.0", method: "notifications/progress" })}\r\r`;
    const pieces = [stream.slice(0, 3), stream.slice(3, 40), stream.slice(40, stream.indexOf("\r\n\r\n") + 1), stream.slice(stream.indexOf("\r\n\r\n") + 1)];
    for (const piece of pieces) res.write(piece);
    res.end();
    return;
  }
  res.writeHead(404).end("no such page");
}

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => {
    handle(req, res).catch((error: Error) => {
      if (!res.headersSent) res.writeHead(500).end(error.message);
    });
  }, pki);
  proxy = await startProxy(
    policyTrusting(
      pki.caFile,
      `mcp:
  - name: ${RULE}
    hosts: [localhost]
    allow_tools: ["get_*", "list_*", "run_*"]
    deny_tools:
      - tool: "list_secret*"
        message: "secrets are off limits"
      - tool: "run_*"
        when: { path: "command", matches: "rm\\\\s+-rf" }
        message: "destructive commands are blocked"
`,
    ),
  );
});

afterAll(async () => {
  for (const client of clients) await client.close().catch(() => undefined);
  for (const transport of streamable.values()) await transport.close().catch(() => undefined);
  for (const transport of legacy.values()) await transport.close().catch(() => undefined);
  await proxy?.close();
  await upstream?.close();
  if (process.env.DUMP_AUDIT) for (const line of proxy.audit.raw) process.stderr.write(line);
});

/** undici's fetch through portcullis (trusting its CA), the way an agent's MCP client would reach the server. */
const proxiedFetch = ((url: string | URL, init?: RequestInit) => undiciFetch(url, { ...(init as object), dispatcher: proxy.dispatcher })) as unknown as FetchLike;

const base = () => `https://localhost:${upstream.port}`;

async function connect(kind: "sse-answers" | "json-answers" | "legacy"): Promise<Client> {
  const client = new Client({ name: "test-agent", version: "1.0.0" });
  clients.push(client);
  const transport =
    kind === "legacy"
      ? new SSEClientTransport(new URL(`${base()}/sse`), { fetch: proxiedFetch })
      : new StreamableHTTPClientTransport(new URL(`${base()}${kind === "json-answers" ? "/mcp-json" : "/mcp"}`), { fetch: proxiedFetch });
  await client.connect(transport);
  return client;
}

async function deniedError(promise: Promise<unknown>): Promise<McpError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(McpError);
  return error as McpError;
}

const KINDS = ["sse-answers", "json-answers", "legacy"] as const;

describe("MCP through portcullis, with the SDK's client and server", () => {
  const sessions = new Map<string, Client>();
  const clientFor = async (kind: (typeof KINDS)[number]) => {
    let client = sessions.get(kind);
    if (!client) sessions.set(kind, (client = await connect(kind)));
    return client;
  };

  it.each(KINDS)("%s: tools/list shows only the tools the client may call", async (kind) => {
    const client = await clientFor(kind);
    const { tools } = await client.listTools();
    expect(tools.map((tool) => tool.name).sort()).toEqual(VISIBLE_TOOLS);
    // The server itself has them all: portcullis took them out.
    expect(ALL_TOOLS.length).toBeGreaterThan(VISIBLE_TOOLS.length);
  });

  it.each(KINDS)("%s: an allowed call reaches the server and its answer the client", async (kind) => {
    const client = await clientFor(kind);
    const result = await client.callTool({ name: "get_file", arguments: { path: `README-${kind}.md` } });
    expect(JSON.stringify(result.content)).toContain(`README-${kind}.md`);
    expect(ran).toContainEqual({ tool: "get_file", args: { path: `README-${kind}.md` } });
    const allowed = await client.callTool({ name: "run_command", arguments: { command: `ls -la ${kind}` } });
    expect(JSON.stringify(allowed.content)).toContain(`ls -la ${kind}`);
  });

  const denials = [
    { why: "not in allow_tools", name: "delete_repo", args: { repo: "victim" }, message: 'policy_denied: tool "delete_repo" is not in allow_tools' },
    { why: "a deny_tools glob", name: "list_secrets", args: {}, message: "policy_denied: secrets are off limits" },
    { why: "a when regex", name: "run_command", args: { command: "rm   -rf /" }, message: "policy_denied: destructive commands are blocked" },
  ];

  for (const kind of KINDS) {
    it.each(denials)(`${kind}: a call refused by $why gets the JSON-RPC error and never reaches the server`, async ({ name, args, message }) => {
      const client = await clientFor(kind);
      const marked = name === "run_command" ? { command: `${args.command} ${kind}` } : name === "delete_repo" ? { repo: `victim-${kind}` } : args;
      // A short timeout: an error that never comes (on the older transport's stream) fails the test fast.
      const error = await deniedError(client.callTool({ name, arguments: marked }, undefined, { timeout: 5000 }));
      expect(error.code).toBe(-32001);
      expect(error.message).toBe(`MCP error -32001: ${message}`);
      expect(error.data).toEqual({ type: "policy_denied", rule: RULE, tool: name });
      expect(ran.filter((call) => call.tool === name && JSON.stringify(call.args) === JSON.stringify(marked))).toEqual([]);
      // The session goes on: the next call works.
      const after = await client.callTool({ name: "list_files", arguments: {} });
      expect(after.isError).toBeFalsy();
    });
  }

  it("writes the mcp field on each exchange, and one denied line naming tool and rule", async () => {
    const client = await clientFor("json-answers");
    await client.callTool({ name: "get_file", arguments: { path: "audit.txt" } });
    const allowed = await proxy.audit.waitFor((line) => (line.mcp as { tool?: string } | undefined)?.tool === "get_file" && line.path === "/mcp-json" && line.msg === "http");
    expect(allowed).toMatchObject({ decision: "allow", status: 200, mcp: { method: "tools/call", tool: "get_file" } });
    const session = (allowed.mcp as { session?: string }).session;
    expect(session).toMatch(/^[0-9a-f-]{36}$/);
    await proxy.audit.waitFor((line) => (line.mcp as { method?: string } | undefined)?.method === "tools/list" && line.path === "/mcp-json");
    await proxy.audit.waitFor((line) => (line.mcp as { method?: string } | undefined)?.method === "initialize" && line.path === "/mcp-json");

    await deniedError(client.callTool({ name: "delete_repo", arguments: { repo: "audited" } }));
    const denied = await proxy.audit.waitFor((line) => line.msg === "denied" && (line.mcp as { tool?: string } | undefined)?.tool === "delete_repo" && line.path === "/mcp-json");
    expect(denied).toMatchObject({ decision: "deny", rule: RULE, status: 200, mcp: { method: "tools/call", tool: "delete_repo", session } });
    expect(denied.reason).toContain('tool call "delete_repo" denied by mcp rule github-mcp-readonly');
    expect(denied.upstream_version).toBeUndefined();
    // One line for that exchange: the next exchange's line comes after it, and no second one.
    await client.callTool({ name: "get_file", arguments: { path: "after-audit.txt" } });
    await proxy.audit.waitFor((line) => line.req_id !== denied.req_id && line.msg === "http" && (line.mcp as { tool?: string } | undefined)?.tool === "get_file" && line.path === "/mcp-json" && JSON.stringify(line.mcp).length > 0 && proxy.audit.lines.indexOf(line) > proxy.audit.lines.indexOf(denied));
    expect(proxy.audit.lines.filter((line) => line.req_id === denied.req_id)).toHaveLength(1);
  });

  it("older transport: the refused call's POST gets 202, its error comes on the session stream, the audit names the session", async () => {
    const client = await clientFor("legacy");
    await deniedError(client.callTool({ name: "delete_repo", arguments: { repo: "legacy-audit" } }, undefined, { timeout: 5000 }));
    const denied = await proxy.audit.waitFor((line) => line.msg === "denied" && line.path !== null && String(line.path).startsWith("/messages?sessionId=") && (line.mcp as { tool?: string } | undefined)?.tool === "delete_repo");
    const session = new URL(String(denied.path), base()).searchParams.get("sessionId");
    expect(denied).toMatchObject({ status: 202, rule: RULE, mcp: { method: "tools/call", tool: "delete_repo", session } });
    expect(legacy.has(session!)).toBe(true);
  });
});

interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** A JSON-RPC POST sent with undici itself, as a client that batches would. */
async function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<RawAnswer> {
  const res = await request(`${base()}${path}`, {
    method: "POST",
    dispatcher: proxy.dispatcher,
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

/** The JSON-RPC messages of an answer, JSON or SSE. */
function messagesOf(answer: RawAnswer): { id?: unknown; result?: unknown; error?: { code: number; message: string; data: unknown } }[] {
  if (String(answer.headers["content-type"]).startsWith("text/event-stream")) {
    return answer.text
      .split(/\n\n/)
      .map((event) => event.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("\n"))
      .filter((data) => data !== "")
      .flatMap((data) => [JSON.parse(data)].flat());
  }
  return [JSON.parse(answer.text)].flat();
}

/** A Streamable HTTP session opened by hand: initialize, then initialized. */
async function rawSession(path: string): Promise<Record<string, string>> {
  const init = await post(path, { jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: "raw", version: "1" } } });
  expect(init.status).toBe(200);
  const headers = { "mcp-session-id": String(init.headers["mcp-session-id"]), "mcp-protocol-version": LATEST_PROTOCOL_VERSION };
  const initialized = await post(path, { jsonrpc: "2.0", method: "notifications/initialized" }, headers);
  expect(initialized.status).toBe(202);
  return headers;
}

const call = (id: number | string, name: string, args: Record<string, unknown>) => ({ jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: args } });

describe("JSON-RPC batches", () => {
  it.each(["/mcp-json", "/mcp"])("%s: a refused call is cut out of the batch, the rest forwarded, the answers merged by id", async (path) => {
    const headers = await rawSession(path);
    const repo = `batch-victim${path}`;
    const file = `batch${path}.txt`;
    const answer = await post(path, [call("deny-1", "delete_repo", { repo }), call(7, "get_file", { path: file }), { jsonrpc: "2.0", id: 8, method: "tools/list" }], { ...headers, "x-request-id": `batch${path}` });
    expect(answer.status).toBe(200);
    const messages = messagesOf(answer);
    expect(messages.map((message) => message.id).sort()).toEqual([7, 8, "deny-1"].sort());
    const byId = new Map(messages.map((message) => [message.id, message]));
    expect(byId.get("deny-1")).toEqual({
      jsonrpc: "2.0",
      id: "deny-1",
      error: { code: -32001, message: 'policy_denied: tool "delete_repo" is not in allow_tools', data: { type: "policy_denied", rule: RULE, tool: "delete_repo" } },
    });
    expect(JSON.stringify(byId.get(7)!.result)).toContain(file);
    expect(((byId.get(8)!.result as { tools: { name: string }[] }).tools.map((tool) => tool.name)).sort()).toEqual(VISIBLE_TOOLS);
    expect(ran).toContainEqual({ tool: "get_file", args: { path: file } });
    expect(ran.some((entry) => entry.tool === "delete_repo" && entry.args.repo === repo)).toBe(false);
    const line = await proxy.audit.waitFor((l) => l.req_id === `batch${path}`);
    expect(line).toMatchObject({ msg: "denied", rule: RULE, status: 200, mcp: { method: "tools/call,tools/list", tool: "delete_repo,get_file", session: headers["mcp-session-id"] } });
  });

  it("a batch of refused calls only is answered by portcullis, nothing forwarded", async () => {
    const headers = await rawSession("/mcp-json");
    const seenBefore = upstream.seen.length;
    const answer = await post("/mcp-json", [call(1, "delete_repo", { repo: "all-denied" }), call(2, "run_command", { command: "rm -rf / all-denied" })], { ...headers, "x-request-id": "all-denied" });
    expect(answer.status).toBe(200);
    expect(answer.headers["content-type"]).toBe("application/json");
    expect(answer.headers["x-request-id"]).toBe("all-denied");
    expect(answer.headers["x-portcullis-error"]).toBe("policy_denied");
    const messages = messagesOf(answer);
    expect(messages.map((message) => [message.id, (message.error!.data as { tool: string }).tool])).toEqual([
      [1, "delete_repo"],
      [2, "run_command"],
    ]);
    expect(upstream.seen.length).toBe(seenBefore);
    const line = await proxy.audit.waitFor((l) => l.req_id === "all-denied");
    expect(line).toMatchObject({ msg: "denied", status: 200, rule: RULE });
    expect(line.reason).toContain('"delete_repo"');
    expect(line.reason).toContain('"run_command"');
  });
});

describe("fail closed", () => {
  const refused: { what: string; body: string; headers?: Record<string, string> }[] = [
    { what: "text that is not JSON", body: "hello, server" },
    { what: "JSON that is not JSON-RPC", body: JSON.stringify({ hello: "server" }) },
    { what: "an empty batch", body: "[]" },
    { what: "a tools/call without a tool name", body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: {} }) },
    // Parsers disagree on which "name" wins: it is refused, not guessed.
    { what: "a key written twice", body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_file","name":"delete_repo","arguments":{}}}' },
    // Read as UTF-7 (as express.json() would), "+ACI-" is a quote: the server would see a second "name", run_shell.
    { what: "a body in another charset", body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_file","arguments":{},"z":"+ACI-,+ACI-name+ACI-:+ACI-run_shell"}}', headers: { "content-type": "application/json; charset=utf-7" } },
    { what: "a second charset after utf-8", body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }), headers: { "content-type": 'application/json; charset=utf-8; charset="utf-16"' } },
    { what: "a Content-Encoding on the request body", body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }), headers: { "content-encoding": "gzip" } },
  ];

  it.each(refused)("refuses $what with 400 bad_request, never forwarded", async ({ what, body, headers }) => {
    const requestId = `refused-${what.replace(/\W+/g, "-")}`;
    const answer = await post("/mcp-json", body, { "x-request-id": requestId, ...headers });
    expect(answer.status).toBe(400);
    expect(answer.headers["x-portcullis-error"]).toBe("bad_request");
    expect(JSON.parse(answer.text)).toMatchObject({ error: { type: "bad_request", rule: RULE, request_id: requestId } });
    expect(upstream.seen.some((seen) => seen.rawHeaders.includes(requestId))).toBe(false);
    const line = await proxy.audit.waitFor((l) => l.req_id === requestId);
    expect(line).toMatchObject({ status: 400, error: { type: "bad_request" } });
  });

  it("refuses a body too large to be checked before it is forwarded (over 10 MiB)", async () => {
    const requestId = "refused-too-large";
    const body = `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"pad":"${"x".repeat(10 * 1024 * 1024)}"}}`;
    const answer = await post("/mcp-json", body, { "x-request-id": requestId });
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.text).error.message).toContain("cannot be checked before it is forwarded");
    expect(upstream.seen.some((seen) => seen.rawHeaders.includes(requestId))).toBe(false);
  });

  it("an answer nested deeper than it can re-write is refused (502), and the proxy goes on serving", async () => {
    const json = await post("/deep-answer", { jsonrpc: "2.0", id: 1, method: "tools/list" });
    expect(json.status).toBe(502);
    expect(JSON.parse(json.text).error).toMatchObject({ type: "upstream_protocol_error" });
    const sse = await post("/deep-answer?sse", { jsonrpc: "2.0", id: 1, method: "tools/list" });
    expect(sse.text).not.toContain("[[[[");
    const after = await post("/gzip-tools", { jsonrpc: "2.0", id: 1, method: "tools/list" }, { "accept-encoding": "gzip" });
    expect(after.status).toBe(200);
  });

  it("an answer to a request that is neither JSON nor an event stream is refused (502) when it has a body: a tools list in it would go unfiltered", async () => {
    const spellings = ["utf16le-bom", "utf16be", "sse", "prefixed"].map((as) => `type=text/plain&status=202&as=${as}`);
    for (const query of ["type=text/plain", "", "type=application/octet-stream&status=201", "type=text/plain&status=202", ...spellings]) {
      const answer = await post(`/unlabelled-tools?${query}`, { jsonrpc: "2.0", id: 1, method: "tools/list" }, { "x-request-id": `unlabelled-${query}` });
      expect(answer.status).toBe(502);
      expect(answer.text).not.toContain("delete_repo");
      expect(JSON.parse(answer.text).error).toMatchObject({ type: "upstream_protocol_error", message: expect.stringContaining("neither JSON nor an event stream") });
      await proxy.audit.waitFor((l) => l.req_id === `unlabelled-${query}` && l.status === 502);
    }
    // Nothing to hide in an empty one, nor in an acknowledgement's text; a notification's 202 is not read at all.
    expect((await post("/unlabelled-tools?type=text/plain&empty", { jsonrpc: "2.0", id: 1, method: "tools/list" })).status).toBe(200);
    const acknowledged = await post("/unlabelled-tools?type=text/plain&status=202&accepted", { jsonrpc: "2.0", id: 1, method: "tools/list" });
    expect([acknowledged.status, acknowledged.text]).toEqual([202, "Accepted"]);
    const accepted = await post("/unlabelled-tools?type=text/plain&status=202", { jsonrpc: "2.0", method: "notifications/initialized" });
    expect(accepted.status).toBe(202);
  });

  it("a tool glob's * crosses / (a namespaced tool name is still matched)", async () => {
    const answer = await post("/mcp-json", { jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "list_secrets/all", arguments: {} } }, { "x-request-id": "namespaced-tool" });
    expect(messagesOf(answer)[0]!.error).toMatchObject({ message: "policy_denied: secrets are off limits" });
    expect(upstream.seen.some((seen) => seen.rawHeaders.includes("namespaced-tool"))).toBe(false);
    expect(judgeToolCall([{ name: "r", hosts: ["x"], deny_tools: [{ tool: "*delete*", message: "no" }] } as unknown as McpRule], { name: "github/delete_repo", input: {} })).toMatchObject({ message: "no" });
    // A name a server may trim or split (a line break, surrounding white space) is refused where tools are denied, even by an exact name.
    for (const name of ["delete_repo\n", "x\ndelete_repo", "delete\u2028repo", " delete_repo"]) {
      for (const tool of ["*delete*", "delete_repo"]) {
        expect(judgeToolCall([{ name: "r", hosts: ["x"], deny_tools: [{ tool, message: "no" }] } as unknown as McpRule], { name, input: {} })).toMatchObject({ tool: name, message: expect.stringContaining("cannot be judged") });
      }
    }
    // Nor does it get into allow_tools: read_* does not admit "read_x\ndelete_repo".
    expect(judgeToolCall([{ name: "r", hosts: ["x"], allow_tools: ["read_*"], deny_tools: [] } as unknown as McpRule], { name: "read_x\ndelete_repo", input: {} })).toMatchObject({ message: expect.stringContaining("not in allow_tools") });
  });

  it("filters a gzip tools/list answer after decoding it", async () => {
    const answer = await post("/gzip-tools", { jsonrpc: "2.0", id: 1, method: "tools/list" }, { "accept-encoding": "gzip" });
    expect(answer.status).toBe(200);
    expect(answer.headers["content-encoding"]).toBeUndefined();
    const [message] = messagesOf(answer);
    expect((message!.result as { tools: { name: string }[] }).tools.map((tool) => tool.name).sort()).toEqual(VISIBLE_TOOLS);
  });
});

describe("event streams read the way clients read them", () => {
  it("filters a tools list whatever the line endings, byte-order mark and chunking, keeping the event's other fields", async () => {
    const answer = await post("/crafted-sse?case=awkward", { jsonrpc: "2.0", id: 1, method: "tools/list" });
    expect(answer.status).toBe(200);
    const events = answer.text.split(/\r\n\r\n|\n\n|\r\r/).filter((event) => event.trim() !== "");
    const first = events.find((event) => event.includes('"tools"'))!;
    expect(first).toMatch(/(^|\n)id: 41(\n|$)/);
    const data = first.split(/\r\n|\n|\r/).find((line) => line.replace(/^\uFEFF/, "").startsWith("data:"))!.replace(/^\uFEFF/, "").slice(5).trim();
    expect((JSON.parse(data) as { result: { tools: { name: string }[] } }).result.tools.map((tool) => tool.name).sort()).toEqual(VISIBLE_TOOLS);
    expect(answer.text).toContain("notifications/progress");
  });

  it("ends the stream at an event it cannot read (fail closed)", async () => {
    const answer = await post("/crafted-sse?case=unreadable", { jsonrpc: "2.0", id: 1, method: "tools/list" }, { "x-request-id": "sse-unreadable" });
    expect(answer.text).not.toContain("delete_repo");
    expect(answer.text).not.toContain("not json");
    expect(answer.text).not.toContain('"after"');
    const line = await proxy.audit.waitFor((l) => l.req_id === "sse-unreadable");
    expect(line.error).toMatchObject({ type: "upstream_protocol_error" });
  });
});

describe("h2", () => {
  it("judges calls and filters tools lists on h2 streams as on HTTP/1.1", async () => {
    const { session, tls } = await h2ThroughProxy(proxy.port, "localhost", upstream.port, proxy.caPem);
    try {
      const send = (body: unknown, headers: Record<string, string> = {}) =>
        h2Request(session, { ":method": "POST", ":path": "/mcp-json", ":authority": `localhost:${upstream.port}`, "content-type": "application/json", accept: "application/json, text/event-stream", ...headers }, JSON.stringify(body));
      const init = await send({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: "h2", version: "1" } } });
      expect(init.status).toBe(200);
      const headers = { "mcp-session-id": String(init.headers["mcp-session-id"]), "mcp-protocol-version": LATEST_PROTOCOL_VERSION };
      expect((await send({ jsonrpc: "2.0", method: "notifications/initialized" }, headers)).status).toBe(202);
      const list = await send({ jsonrpc: "2.0", id: 1, method: "tools/list" }, headers);
      expect((JSON.parse(list.body.toString()) as { result: { tools: { name: string }[] } }).result.tools.map((tool) => tool.name).sort()).toEqual(VISIBLE_TOOLS);
      const denied = await send(call(2, "delete_repo", { repo: "h2-victim" }), { ...headers, "x-request-id": "h2-denied" });
      expect(denied.status).toBe(200);
      expect(JSON.parse(denied.body.toString())).toMatchObject({ jsonrpc: "2.0", id: 2, error: { code: -32001, data: { type: "policy_denied", rule: RULE, tool: "delete_repo" } } });
      expect(ran.some((entry) => entry.args.repo === "h2-victim")).toBe(false);
      const line: AuditLine = await proxy.audit.waitFor((l) => l.req_id === "h2-denied");
      expect(line).toMatchObject({ msg: "denied", http_version: "2", mcp: { method: "tools/call", tool: "delete_repo", session: headers["mcp-session-id"] } });
    } finally {
      session.destroy();
      tls.destroy();
    }
  });
});

describe("parts", () => {
  it("scanJson finds a batch's elements as written, and keys written twice however they are spelt", () => {
    const text = ' [ {"a":"x,]}\\"", "b":[1,2]} ,\n 12345678901234567890 , "s" ] ';
    expect(scanJson(text).elements).toEqual(['{"a":"x,]}\\"", "b":[1,2]}', "12345678901234567890", '"s"']);
    expect(scanJson("[]").elements).toEqual([]);
    expect(scanJson('{"a":1}').elements).toBeUndefined();
    expect(scanJson('{"params":{"name":"a","na\\u006de":"b"}}').duplicateKey).toBe("name");
    expect(scanJson('[{"name":1},{"name":2}]').duplicateKey).toBeUndefined();
  });

  it("a kept batch message is forwarded byte for byte (numbers beyond 2^53 intact)", () => {
    const body = parseRpcBody(Buffer.from('[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_file","arguments":{"n":12345678901234567890}}}]'));
    expect(batchText(body.messages)).toContain("12345678901234567890");
  });

  it("McpSseFilter: events pass as they complete, injected ones between them, and it says when it is over", async () => {
    let closed = 0;
    const filter = new McpSseFilter({ visible: (name) => name !== "hidden", prelude: ["event: message\ndata: {\"first\":true}\n\n"], onUnreadable: () => undefined, onClosed: () => closed++ });
    const out: string[] = [];
    filter.on("data", (chunk: Buffer) => out.push(chunk.toString()));
    const tools = JSON.stringify({ jsonrpc: "2.0", id: 3, result: { tools: [{ name: "shown" }, { name: "hidden" }, { title: "no name" }] } });
    for (const byte of Buffer.from(`data: ${tools}\n\n`)) filter.write(Buffer.from([byte]));
    expect(filter.inject(["event: message\ndata: {\"injected\":true}\n\n"])).toBe(true);
    filter.end("data: {\"cut\": \"off\"}");
    await new Promise((resolve) => filter.once("end", resolve));
    expect(out.join("")).toBe(`event: message\ndata: {"first":true}\n\ndata: ${JSON.stringify({ jsonrpc: "2.0", id: 3, result: { tools: [{ name: "shown" }] } })}\n\nevent: message\ndata: {"injected":true}\n\n`);
    await new Promise((resolve) => setImmediate(resolve));
    expect(closed).toBe(1);
    expect(filter.inject(["late"])).toBe(false);
  });

  it("LegacySessionRegistry: bounded, and a stream's close removes its own entry only", () => {
    const registry = new LegacySessionRegistry(2);
    const stream = (session: string) => ({ session, inject: () => true });
    const closeA = registry.open("a", stream("a"));
    registry.open("b", stream("b"));
    registry.open("c", stream("c"));
    expect(registry.size).toBe(2);
    expect(registry.find("a")).toBeUndefined();
    closeA();
    expect(registry.size).toBe(2);
    const first = registry.open("b", stream("b2"));
    registry.open("b", stream("b3"));
    first();
    expect(registry.find("b")?.session).toBe("b3");
    expect(legacyEndpoint("https://h:8443/sse", "/messages?sessionId=s-1")).toEqual({ url: "https://h:8443/messages?sessionId=s-1", session: "s-1" });
    expect(legacyEndpoint("https://h:8443/sse", "https://elsewhere/messages")).toBeUndefined();
  });
});
