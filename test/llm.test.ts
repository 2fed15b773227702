import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { fakeLlmHandler, PATHS, release, type Api, type FakeRequest } from "./helpers/fake-llm.js";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { rawExchange } from "./helpers/tunnel.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: TestProxy;
const APIS: Api[] = ["anthropic", "openai-chat", "openai-responses"];

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream(fakeLlmHandler, pki);
  proxy = await startProxy(
    policyTrusting(
      pki.caFile,
      `llm:
  - name: no-destructive-shell
    hosts: [localhost]
    deny_tools:
      - tool: "bash"
        when: { path: "command", matches: "rm\\\\s+-rf|mkfs|dd\\\\s+if=" }
        message: "destructive shell commands are blocked"
      - tool: "delete_*"
        message: "deleting is not allowed"
      - tool: "local_shell"
        when: { path: "command", matches: "rm" }
        message: "local shell rm is blocked"
`,
    ),
  );
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

async function ask(api: Api, body: FakeRequest, requestId: string) {
  const res = await request(`https://localhost:${upstream.port}${PATHS[api]}`, {
    method: "POST",
    dispatcher: proxy.dispatcher,
    body: JSON.stringify(body),
    headers: { "content-type": "application/json", "x-request-id": requestId },
  });
  return res;
}

describe("LLM tool-call policy, JSON responses", () => {
  it.each(APIS)("%s: an allowed tool call passes untouched", async (api) => {
    const res = await ask(api, { command: "ls -la" }, `json-ok-${api}`);
    expect(res.statusCode).toBe(200);
    const text = await res.body.text();
    expect(text).toContain("ls -la");
    expect(Number(res.headers["content-length"])).toBe(Buffer.byteLength(text));
    const line = await proxy.audit.waitFor((l) => l.req_id === `json-ok-${api}`);
    expect(line).toMatchObject({ msg: "http", decision: "allow" });
  });

  it.each(APIS)("%s: a denied call replaces the response with the API's own 400 error", async (api) => {
    const res = await ask(api, { command: "rm -rf /" }, `json-deny-${api}`);
    expect(res.statusCode).toBe(400);
    expect(res.headers["x-portcullis-error"]).toBe("policy_denied");
    const body = (await res.body.json()) as { type?: string; error: { type: string; message: string; rule: string } };
    if (api === "anthropic") expect(body.type).toBe("error");
    expect(body.error).toMatchObject({ type: "policy_denied", rule: "no-destructive-shell" });
    expect(body.error.message).toContain("destructive shell commands are blocked");
    expect(JSON.stringify(body)).not.toContain("rm -rf");
    const line = await proxy.audit.waitFor((l) => l.req_id === `json-deny-${api}`);
    expect(line).toMatchObject({ msg: "denied", decision: "deny", rule: "no-destructive-shell", status: 400 });
    expect(line.reason).toContain('tool call "bash"');
  });

  it("matches tool names by glob without a condition", async () => {
    const res = await ask("openai-chat", { tool: "delete_repository", command: "x" }, "json-glob");
    expect(res.statusCode).toBe(400);
    expect(((await res.body.json()) as { error: { message: string } }).error.message).toContain("deleting is not allowed");
  });

  it.each(["gzip", "br", "deflate"] as const)("decodes %s bodies to judge them", async (encoding) => {
    const denied = await ask("anthropic", { command: "mkfs /dev/sda", encoding }, `enc-deny-${encoding}`);
    expect(denied.statusCode).toBe(400);
    await denied.body.text();
    const allowed = await ask("anthropic", { command: "echo hi", encoding }, `enc-ok-${encoding}`);
    expect(allowed.statusCode).toBe(200);
    expect(allowed.headers["content-encoding"]).toBeUndefined();
    expect(((await allowed.body.json()) as { content: { input?: { command: string } }[] }).content[1]!.input!.command).toBe("echo hi");
  });

  it("fails closed on a body it cannot parse", async () => {
    const res = await ask("openai-chat", { raw: '{"choices": [ {"message": ' }, "json-broken");
    expect(res.statusCode).toBe(400);
    expect(((await res.body.json()) as { error: { message: string } }).error.message).toMatch(/could not be checked/);
    const args = await ask("openai-chat", { raw: JSON.stringify({ object: "chat.completion", choices: [{ message: { tool_calls: [{ function: { name: "bash", arguments: "{not json" } }] } }] }) }, "json-args");
    expect(args.statusCode).toBe(400);
    await args.body.text();
    await proxy.audit.waitFor((l) => l.req_id === "json-args" && l.msg === "denied");
  });

  it("fails closed on a body over 10 MiB", async () => {
    const big = JSON.stringify({ type: "message", content: [{ type: "text", text: "x".repeat(11 * 1024 * 1024) }] });
    const res = await ask("anthropic", { raw: big }, "json-huge");
    expect(res.statusCode).toBe(400);
    expect(((await res.body.json()) as { error: { message: string } }).error.message).toMatch(/over 10 MiB/);
  });
});

describe("LLM guard: shapes and tricks that must not slip through", () => {
  const chat = (delta: unknown, index = 0, finish: string | null = null) =>
    `data: ${JSON.stringify({ object: "chat.completion.chunk", choices: [{ index, delta, finish_reason: finish }] })}\n\n`;

  it("judges the legacy function_call shape, as JSON and as a stream", async () => {
    const json = await ask("openai-chat", { raw: JSON.stringify({ object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", function_call: { name: "bash", arguments: '{"command":"rm -rf /"}' } } }] }) }, "legacy-json");
    expect(json.statusCode).toBe(400);
    await json.body.text();
    const stream = await ask(
      "openai-chat",
      { stream: true, raw: chat({ function_call: { name: "bash", arguments: "" } }) + chat({ function_call: { arguments: '{"command":"rm -rf /"}' } }) + chat({}, 0, "function_call") + "data: [DONE]\n\n" },
      "legacy-sse",
    );
    const text = await stream.body.text();
    expect(text).not.toContain("rm -rf");
    expect(text).toContain("policy_denied");
  });

  it("judges Responses call items beyond function_call (local_shell_call)", async () => {
    const res = await ask("openai-responses", { raw: JSON.stringify({ object: "response", output: [{ type: "local_shell_call", id: "ls_1", call_id: "c", action: { type: "exec", command: ["rm", "-rf", "/"] } }] }) }, "local-shell");
    expect(res.statusCode).toBe(400);
    expect(((await res.body.json()) as { error: { message: string } }).error.message).toContain("local shell rm is blocked");
  });

  it("judges each choice's calls when that choice finishes, names kept (n=2)", async () => {
    const raw =
      chat({ tool_calls: [{ index: 0, id: "a", type: "function", function: { name: "bash", arguments: "" } }] }, 1) +
      chat({ content: "done" }, 0, "stop") +
      chat({ tool_calls: [{ index: 0, function: { arguments: '{"command":"rm -rf /"}' } }] }, 1) +
      chat({}, 1, "tool_calls") +
      "data: [DONE]\n\n";
    const text = await (await ask("openai-chat", { stream: true, raw }, "two-choices")).body.text();
    expect(text).not.toContain("rm -rf");
    expect(text).toContain("destructive shell commands are blocked");
  });

  it("is not fooled by a byte-order mark, CRLF or lone-CR line endings", async () => {
    for (const [name, eol] of [["crlf", "\r\n"], ["cr", "\r"]] as const) {
      const raw = (`\uFEFF` + chat({ tool_calls: [{ index: 0, id: "a", type: "function", function: { name: "bash", arguments: '{"command":"rm -rf /"}' } }] }) + chat({}, 0, "tool_calls")).replace(/\n/g, eol);
      const text = await (await ask("openai-chat", { stream: true, raw, chunk: 3 }, `eol-${name}`)).body.text();
      expect(text).not.toContain("rm -rf");
      expect(text).toContain("policy_denied");
    }
  });

  it("fails closed when a stream changes API mid-way or an event has no known shape", async () => {
    const mixed = `event: message_start\ndata: ${JSON.stringify({ type: "message_start", message: { type: "message" } })}\n\n` + chat({ tool_calls: [{ index: 0, function: { name: "bash", arguments: '{"command":"rm -rf /"}' } }] }, 0, "tool_calls");
    const text = await (await ask("anthropic", { stream: true, raw: mixed }, "mixed")).body.text();
    expect(text).not.toContain("rm -rf");
    expect(text).toMatch(/could not be checked: a openai-chat event in a anthropic stream/);
    const unknown = await (await ask("anthropic", { stream: true, raw: 'data: {"hello":"world"}\n\n' }, "unknown-shape")).body.text();
    expect(unknown).toContain("policy_denied");
  });

  it("refuses a request target with a fragment (it could steer the API detection)", async () => {
    const reply = rawExchange(proxy.port, "localhost", upstream.port, proxy.caPem, `POST /v1/chat/completions#/messages HTTP/1.1\r\nHost: localhost:${upstream.port}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`);
    expect(await reply).toMatch(/^HTTP\/1\.1 400 [\s\S]*fragment/);
  });

  it("does not relay an LLM JSON answer to an upgrade request unjudged", async () => {
    const text = await rawExchange(proxy.port, "localhost", upstream.port, proxy.caPem, `GET /v1/chat/completions HTTP/1.1\r\nHost: localhost:${upstream.port}\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n`);
    // Refused before it is forwarded: portcullis relays WebSocket upgrades only.
    expect(text).toMatch(/^HTTP\/1\.1 400 [\s\S]*relays WebSocket upgrades only/);
    expect(text).not.toContain('"bash"');
  });

  it("survives an upstream reason phrase Node cannot write back", async () => {
    const { createServer } = await import("node:tls");
    const raw = createServer({ key: pki.key, cert: pki.ipCert, SNICallback: pki.sniCallback }, (socket) => {
      socket.once("data", () => socket.end("HTTP/1.1 200 O\x01K\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"));
    });
    await new Promise<void>((resolve) => raw.listen(0, "127.0.0.1", resolve));
    try {
      const port = (raw.address() as import("node:net").AddressInfo).port;
      const res = await request(`https://localhost:${port}${PATHS.anthropic}`, { method: "POST", dispatcher: proxy.dispatcher, body: "{}" });
      expect(res.statusCode).toBe(200);
      expect(res.statusText).toBe("OK");
      await res.body.text();
      const again = await ask("anthropic", { command: "ls" }, "after-bad-reason");
      expect(again.statusCode).toBe(200);
      await again.body.text();
    } finally {
      await new Promise((resolve) => raw.close(resolve));
    }
  });
});

describe("LLM tool-call policy, streams", () => {
  it.each(APIS)("%s: text flows as it arrives and an allowed tool call follows", async (api) => {
    const hold = `sse-ok-${api}`;
    const res = await ask(api, { stream: true, command: "ls -la", hold }, hold);
    expect(res.statusCode).toBe(200);
    const iterator = res.body[Symbol.asyncIterator]();
    let seen = "";
    while (!seen.includes("Running it. ✓")) seen += Buffer.from((await iterator.next()).value as Buffer).toString();
    // The upstream has not sent the tool call yet: the text reached the client before the stream ended.
    release(hold);
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) seen += Buffer.from(next.value as Buffer).toString();
    expect(seen).toContain("ls -la".replace(/ /g, " "));
    expect(seen).not.toContain("policy_denied");
  });

  it.each(APIS)("%s: a denied tool call never reaches the client; the stream ends with the API's error event", async (api) => {
    const hold = `sse-deny-${api}`;
    const res = await ask(api, { stream: true, command: "rm -rf /", hold }, hold);
    const iterator = res.body[Symbol.asyncIterator]();
    let seen = "";
    while (!seen.includes("Running it. ✓")) seen += Buffer.from((await iterator.next()).value as Buffer).toString();
    release(hold);
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) seen += Buffer.from(next.value as Buffer).toString();
    expect(seen).not.toContain("rm -");
    expect(seen).not.toContain('"bash"');
    const last = seen.trim().split("\n\n").at(-1)!;
    expect(last).toContain("policy_denied");
    expect(last).toContain("destructive shell commands are blocked");
    if (api !== "openai-chat") expect(last.startsWith("event: error\n")).toBe(true);
    const line = await proxy.audit.waitFor((l) => l.req_id === hold);
    expect(line).toMatchObject({ msg: "denied", rule: "no-destructive-shell", status: 200 });
  });

  it.each([1, 3, 7, 64])("judges correctly when the stream is cut into %i-byte pieces", async (size) => {
    for (const api of APIS) {
      const denied = await ask(api, { stream: true, command: "dd if=/dev/zero of=/dev/sda", chunk: size }, `cut-${size}-${api}`);
      const text = await denied.body.text();
      expect(text).not.toContain("dd if");
      expect(text).toContain("policy_denied");
      const allowed = await ask(api, { stream: true, command: "cat ünïcode.txt", chunk: size }, `cut-ok-${size}-${api}`);
      const fine = await allowed.body.text();
      expect(fine).toContain("Running it. ✓");
      expect(fine).not.toContain("policy_denied");
    }
  });

  it("decodes a gzip stream to judge it", async () => {
    const res = await ask("anthropic", { stream: true, command: "rm -rf ~", encoding: "gzip", chunk: 5 }, "sse-gzip");
    expect(res.headers["content-encoding"]).toBeUndefined();
    const text = await res.body.text();
    expect(text).toContain("Running it. ✓");
    expect(text).toContain("policy_denied");
    expect(text).not.toContain("rm -rf");
  });

  it("ends the stream with an error when an event cannot be parsed", async () => {
    const res = await ask("anthropic", { stream: true, raw: "event: content_block_delta\ndata: {broken\n\n" }, "sse-broken");
    const text = await res.body.text();
    expect(text).toMatch(/event: error\ndata: .*could not be checked/);
    await proxy.audit.waitFor((l) => l.req_id === "sse-broken" && l.msg === "denied");
  });

  it("does not judge bodiless answers (HEAD)", async () => {
    const res = await request(`https://localhost:${upstream.port}${PATHS.anthropic}`, { method: "HEAD", dispatcher: proxy.dispatcher });
    expect(res.statusCode).toBe(200);
    await res.body.text();
  });

  it("refuses a WebSocket to an API it does not understand on a host under an llm rule (its frames could not be judged)", async () => {
    const { default: WebSocket } = await import("ws");
    const ws = new WebSocket(`wss://localhost:${upstream.port}/v1/some-socket`, { agent: proxy.agent(), ca: proxy.caPem });
    const status = await new Promise<number>((resolve) => ws.once("unexpected-response", (_req, res) => resolve(res.statusCode!)));
    expect(status).toBe(403);
    const line = await proxy.audit.waitFor((l) => l.path === "/v1/some-socket");
    expect(line).toMatchObject({ msg: "denied", rule: "no-destructive-shell" });
    expect(String(line.reason)).toContain("allow_websocket");
  });

  it("leaves hosts without an llm rule alone", async () => {
    const other = await startProxy(policyTrusting(pki.caFile));
    try {
      const res = await request(`https://localhost:${upstream.port}${PATHS.anthropic}`, { method: "POST", dispatcher: other.dispatcher, body: JSON.stringify({ command: "rm -rf /" }) });
      expect(res.statusCode).toBe(200);
      expect(await res.body.text()).toContain("rm -rf /");
    } finally {
      await other.close();
    }
  });
});

describe("the API a path names", () => {
  it("is the one its readings name; readings naming two APIs name none, so the answer's shape decides", async () => {
    const { apiForPath } = await import("../src/llm/tool-calls.js");
    expect(apiForPath(["/v1/messages"])).toBe("anthropic");
    // Tomcat's reading names it where the path as sent does not.
    expect(apiForPath(["/v1/responses;x", "/v1/responses"])).toBe("openai-responses");
    // Cut at the NUL, an upstream serves chat completions; read whole, the path ends in /messages.
    expect(apiForPath(["/v1/chat/completions\u0000/messages;x", "/v1/chat/completions\u0000/messages", "/v1/chat/completions"])).toBeUndefined();
    expect(apiForPath(["/v1/models"])).toBeUndefined();
  });
});
