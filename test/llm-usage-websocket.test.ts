import type { IncomingMessage } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import WebSocket, { WebSocketServer } from "ws";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

/** Usage and budgets on the WebSocket APIs: Realtime (response.done) and Responses WebSocket mode (response.completed). */
let pki: ServerPki;
let upstream: TestUpstream;
let wss: WebSocketServer;
let proxy: TestProxy;

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream((_req, res) => res.writeHead(404).end(), pki);
  wss = new WebSocketServer({ server: upstream.server, perMessageDeflate: true });
  wss.on("connection", (ws, req: IncomingMessage) => {
    const realtime = String(req.url).includes("realtime");
    if (realtime) ws.send(JSON.stringify({ type: "session.created", session: { id: "sess_1", model: "gpt-realtime" } }));
    ws.on("message", (data) => {
      const { turn, input, output } = JSON.parse(data.toString()) as { turn: string; input: number; output: number };
      ws.send(JSON.stringify({ type: "response.created", response: { id: `resp_${turn}`, status: "in_progress" } }));
      ws.send(JSON.stringify({ type: realtime ? "response.output_audio_transcript.delta" : "response.output_text.delta", delta: "hello" }));
      const usage = realtime
        ? { total_tokens: input + output, input_tokens: input, output_tokens: output, input_token_details: { cached_tokens: 2, text_tokens: input, audio_tokens: 0 } }
        : { input_tokens: input, input_tokens_details: { cached_tokens: 2 }, output_tokens: output, total_tokens: input + output };
      ws.send(JSON.stringify({ type: realtime ? "response.done" : "response.completed", response: { id: `resp_${turn}`, status: "completed", ...(realtime ? {} : { model: "gpt-r" }), usage } }));
    });
  });
  proxy = await startProxy(
    policyTrusting(
      pki.caFile,
      `budgets:
  rules:
    - { name: ws-tokens, hosts: [localhost], tokens: 100, window: 1h }
`,
    ),
    { adminListen: "127.0.0.1:0" },
  );
});

afterAll(async () => {
  await proxy?.close();
  for (const client of wss?.clients ?? []) client.terminate();
  await new Promise<void>((resolve) => (wss ? wss.close(() => resolve()) : resolve()));
  await upstream?.close();
});

function open(path: string, id: string): Promise<WebSocket> {
  const ws = new WebSocket(`wss://localhost:${upstream.port}${path}`, { agent: proxy.agent(), ca: proxy.caPem, headers: { "x-request-id": id } });
  return new Promise((resolve, reject) => ws.once("open", () => resolve(ws)).once("error", reject).once("unexpected-response", (_req, res) => reject(new Error(`status ${res.statusCode}`))));
}

function turn(ws: WebSocket, name: string, input: number, output: number, finalType: string): Promise<void> {
  return new Promise((resolve) => {
    const onMessage = (data: Buffer) => {
      const event = JSON.parse(data.toString()) as { type: string; response?: { id: string; usage?: unknown } };
      if (event.type !== finalType || event.response?.id !== `resp_${name}`) return;
      // The usage reaches the client as the upstream sent it.
      expect(event.response.usage).toBeDefined();
      ws.off("message", onMessage);
      resolve();
    };
    ws.on("message", onMessage);
    ws.send(JSON.stringify({ turn: name, input, output }));
  });
}

describe("usage over LLM WebSockets", () => {
  it("Realtime: sums each response.done into the session's llm field and charges the budget per response", async () => {
    const ws = await open("/v1/realtime?model=gpt-realtime", "ws-realtime");
    await turn(ws, "a", 20, 10, "response.done");
    await turn(ws, "b", 5, 5, "response.done");
    ws.close(1000);
    const line = await proxy.audit.waitFor((l) => l.req_id === "ws-realtime" && l.msg === "websocket");
    expect(line.llm).toEqual({ api: "openai-realtime", model: "gpt-realtime", input_tokens: 25, output_tokens: 15, cache_read_tokens: 4 });
    expect(line.ws).toMatchObject({ close_code: 1000 });
    // A path an upstream reads as /v1/realtime (Tomcat and Spring drop ";x") is the same API: its usage is read.
    const spelt = await open("/v1/realtime;x?model=gpt-realtime", "ws-realtime-spelt");
    await turn(spelt, "a2", 3, 2, "response.done");
    spelt.close(1000);
    const spelled = await proxy.audit.waitFor((l) => l.req_id === "ws-realtime-spelt" && l.msg === "websocket");
    expect(spelled.llm).toMatchObject({ api: "openai-realtime", input_tokens: 3, output_tokens: 2 });
  });

  it("Responses WebSocket mode: response.completed; a session is admitted, and a new one refused once the budget is spent", async () => {
    const ws = await open("/v1/responses", "ws-responses");
    // 45 tokens so far; this response brings the counter to 105: spent, but the session in flight goes on.
    await turn(ws, "c", 50, 10, "response.completed");
    await turn(ws, "d", 1, 1, "response.completed");
    // Spent now: a new response asked for in the open session is refused there, the session stays open.
    const refusal = new Promise<Record<string, unknown>>((resolve) => ws.once("message", (data) => resolve(JSON.parse(data.toString()) as Record<string, unknown>)));
    ws.send(JSON.stringify({ type: "response.create", turn: "e", input: 1, output: 1 }));
    expect(await refusal).toMatchObject({ type: "error", error: { type: "budget_exceeded", rule: "ws-tokens" } });
    // The same ask spelt other ways is the same ask: escapes, a binary frame, the type written twice.
    const spellings: [string, boolean][] = [
      ['{"type":"response\\u002ecreate","turn":"f","input":1,"output":1}', false],
      ['{"type":"\\u0072esponse.create","turn":"g","input":1,"output":1}', false],
      [JSON.stringify({ type: "response.create", turn: "h", input: 1, output: 1 }), true],
      ['{"type":"session.update","type":"response.create","turn":"i","input":1,"output":1}', false],
      ['{"a":1,"a":2,"type":"response.create","type":"session.update","turn":"j","input":1,"output":1}', false],
    ];
    for (const [text, binary] of spellings) {
      const refused = new Promise<Record<string, unknown>>((resolve) => ws.once("message", (data) => resolve(JSON.parse(data.toString()) as Record<string, unknown>)));
      ws.send(binary ? Buffer.from(text) : text, { binary });
      expect(await refused, text).toMatchObject({ type: "error", error: { type: "budget_exceeded" } });
    }
    expect(ws.readyState).toBe(WebSocket.OPEN);
    ws.close(1000);
    const line = await proxy.audit.waitFor((l) => l.req_id === "ws-responses" && l.msg === "denied");
    expect(line).toMatchObject({ rule: "ws-tokens", ws: { messages: { denied: 6 } } });
    // The refused message never reached the upstream: no response "e" was charged.
    expect(line.llm).toEqual({ api: "openai-responses", model: "gpt-r", input_tokens: 51, output_tokens: 11, cache_read_tokens: 4 });
    const rows = (await (await request(`http://127.0.0.1:${proxy.proxy.adminAddress!.port}/budgets`)).body.json()) as { tokens: number; requests: number }[];
    expect(rows).toEqual([expect.objectContaining({ rule: "ws-tokens", tokens: 107, requests: 3 })]);
    await expect(open("/v1/responses", "ws-refused")).rejects.toThrow("status 429");
    expect(await proxy.audit.waitFor((l) => l.req_id === "ws-refused")).toMatchObject({ msg: "denied", rule: "ws-tokens", status: 429 });
  });
});
