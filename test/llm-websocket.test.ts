import type { IncomingMessage } from "node:http";
import { EventEmitter } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

/**
 * LLM rules on the WebSocket APIs (SPEC section 8): the OpenAI Realtime API and the Responses
 * API's WebSocket mode, played by a fake that sends their recorded event shapes.
 */
let pki: ServerPki;
let upstream: TestUpstream;
let wss: WebSocketServer;
let proxy: TestProxy;
const signals = new EventEmitter();

function callEvents(id: string, name: string, args: string, index: number): object[] {
  const half = Math.floor(args.length / 2);
  return [
    { type: "response.output_item.added", output_index: index, item: { id, type: "function_call", name, call_id: `call_${id}`, arguments: "" } },
    { type: "response.function_call_arguments.delta", item_id: id, output_index: index, delta: args.slice(0, half) },
    { type: "response.function_call_arguments.delta", item_id: id, output_index: index, delta: args.slice(half) },
    { type: "response.function_call_arguments.done", item_id: id, output_index: index, arguments: args },
    { type: "response.output_item.done", output_index: index, item: { id, type: "function_call", name, call_id: `call_${id}`, arguments: args, status: "completed" } },
  ];
}

/** One response: a text message, then a tool call; the text delta goes out before the call completes. */
async function respond(ws: WebSocket, api: "realtime" | "responses", command: string, turn: string): Promise<void> {
  const args = JSON.stringify({ command });
  const send = (event: object) => ws.send(JSON.stringify(event));
  send({ type: "response.created", response: { id: `resp_${turn}`, status: "in_progress" } });
  send({ type: "response.output_item.added", output_index: 0, item: { id: `msg_${turn}`, type: "message", role: "assistant" } });
  const [added, ...rest] = callEvents(`fc_${turn}`, "bash", args, 1);
  send(added!);
  // Text of another item while the call is open: it must reach the client now.
  send({ type: api === "realtime" ? "response.text.delta" : "response.output_text.delta", item_id: `msg_${turn}`, output_index: 0, delta: `thinking about ${turn}` });
  await new Promise((resolve) => signals.once(`text-seen-${turn}`, resolve));
  for (const event of rest) send(event);
  // The Realtime API tells of the item again once it is in the conversation, arguments and all.
  if (api === "realtime") send({ type: "conversation.item.done", item: { id: `fc_${turn}`, type: "function_call", name: "bash", call_id: `call_fc_${turn}`, arguments: args, status: "completed" } });
  const output = [
    { id: `msg_${turn}`, type: "message", role: "assistant", content: [{ type: "output_text", text: `thinking about ${turn}` }] },
    { id: `fc_${turn}`, type: "function_call", name: "bash", call_id: `call_fc_${turn}`, arguments: args },
  ];
  send({ type: api === "realtime" ? "response.done" : "response.completed", response: { id: `resp_${turn}`, status: "completed", output, usage: { input_tokens: 10, output_tokens: 5 } } });
}

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream((_req, res) => res.writeHead(404).end(), pki);
  wss = new WebSocketServer({ server: upstream.server });
  wss.on("connection", (ws, req: IncomingMessage) => {
    const api = String(req.url).includes("realtime") ? "realtime" : "responses";
    ws.send(JSON.stringify({ type: api === "realtime" ? "session.created" : "response.queued", session: { id: "sess_1" } }));
    ws.on("message", (data) => {
      const request = JSON.parse(data.toString()) as { command: string; turn: string };
      void respond(ws, api, request.command, request.turn);
    });
  });
  proxy = await startProxy(
    policyTrusting(
      pki.caFile,
      `llm:
  - name: no-destructive-shell
    hosts: [localhost]
    deny_tools:
      - tool: "bash"
        when: { path: "command", matches: "rm\\\\s+-rf" }
        message: "destructive shell commands are blocked"
`,
    ),
  );
});

afterAll(async () => {
  await proxy?.close();
  for (const client of wss?.clients ?? []) client.terminate();
  await new Promise<void>((resolve) => (wss ? wss.close(() => resolve()) : resolve()));
  await upstream?.close();
});

/** A client that collects events, and says when it saw each turn's text. */
async function connect(path: string): Promise<{ ws: WebSocket; events: Record<string, unknown>[]; until: (type: string, turn: string) => Promise<void> }> {
  const ws = new WebSocket(`wss://localhost:${upstream.port}${path}`, { agent: proxy.agent(), ca: proxy.caPem });
  const events: Record<string, unknown>[] = [];
  const emitter = new EventEmitter();
  ws.on("message", (data) => {
    const event = JSON.parse(data.toString()) as Record<string, unknown>;
    events.push(event);
    const delta = String(event.delta ?? "");
    if (delta.startsWith("thinking about ")) signals.emit(`text-seen-${delta.slice("thinking about ".length)}`);
    emitter.emit("event", event);
  });
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  const until = (type: string, turn: string) =>
    new Promise<void>((resolve) => {
      const check = (event: Record<string, unknown>) => {
        const response = event.response as { id?: string } | undefined;
        if (event.type === type && response?.id === `resp_${turn}`) {
          emitter.off("event", check);
          resolve();
        }
      };
      emitter.on("event", check);
    });
  return { ws, events, until };
}

describe.each([
  ["the Realtime API", "/v1/realtime?model=gpt-realtime", "response.done"],
  ["the Responses API WebSocket mode", "/v1/responses", "response.completed"],
])("tool calls over %s", (_name, path, finalType) => {
  it("holds a tool call until complete, lets an allowed one through in order, never holds text", async () => {
    const { ws, events, until } = await connect(path);
    const done = until(finalType, "ok");
    ws.send(JSON.stringify({ command: "ls -la", turn: "ok" }));
    await done;
    const types = events.map((event) => event.type);
    expect(types).toContain("response.function_call_arguments.done");
    // The call's events arrive together and in order, after the text that overtook them.
    const added = types.lastIndexOf("response.output_item.added");
    expect(types.slice(added, added + 5)).toEqual(["response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta", "response.function_call_arguments.done", "response.output_item.done"]);
    const final = events.at(-1) as { response: { output: { type: string }[] } };
    expect(final.response.output.map((item) => item.type)).toEqual(["message", "function_call"]);
    ws.close();
  });

  it("never shows the client a denied call: one policy_denied error instead, the session stays open", async () => {
    const { ws, events, until } = await connect(path);
    const denied = until(finalType, "bad");
    ws.send(JSON.stringify({ command: "rm -rf /", turn: "bad" }));
    await denied;
    expect(JSON.stringify(events)).not.toContain("rm -rf");
    const errors = events.filter((event) => event.type === "error");
    expect(errors).toEqual([{ type: "error", error: { type: "policy_denied", message: 'tool call "bash" denied by llm rule no-destructive-shell: destructive shell commands are blocked', rule: "no-destructive-shell" } }]);
    const final = events.at(-1) as { response: { output: { type: string }[] } };
    expect(final.response.output.map((item) => item.type)).toEqual(["message"]);
    // Still open: the next turn works.
    const again = until(finalType, "next");
    ws.send(JSON.stringify({ command: "pwd", turn: "next" }));
    await again;
    ws.close();
    const line = await proxy.audit.waitFor((l) => l.path === path && l.msg === "denied");
    expect(line).toMatchObject({ rule: "no-destructive-shell" });
    expect((line.ws as { messages: { denied: number } }).messages.denied).toBe(1);
  });
});
