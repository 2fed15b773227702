import type { IncomingMessage } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

/** SPEC section 8: sessions that must be read are parsed into messages; everything else stays a byte copy. */
const SECRET = "ws-secret-4f1d2c9b8a7e6d5c";
const CHAT_SECRET = "chat-secret-0a9b8c7d6e5f";
const PLACEHOLDER = "PCX_CHAT_PLACEHOLDER_0001";
let pki: ServerPki;
let upstream: TestUpstream;
let wss: WebSocketServer;
let proxy: TestProxy;
/** What the upstream received, per path. */
const received = new Map<string, (string | Buffer)[]>();
const pings: string[] = [];
const upstreamCloses: number[] = [];

beforeAll(async () => {
  process.env.PCX_WSM_SECRET = SECRET;
  process.env.PCX_WSM_CHAT = CHAT_SECRET;
  pki = await makeUpstreamPki();
  upstream = await startUpstream((_req, res) => res.writeHead(404).end(), pki);
  wss = new WebSocketServer({ server: upstream.server, perMessageDeflate: true });
  wss.on("connection", (ws, req: IncomingMessage) => {
    const path = new URL(req.url ?? "/", "https://x").pathname;
    ws.on("ping", (data) => pings.push(data.toString()));
    ws.on("close", (code) => upstreamCloses.push(code));
    if (path === "/whoami") {
      const token = String(req.headers["x-token"]);
      ws.send(`your token is ${token}`);
      ws.send(Buffer.concat([Buffer.from([0, 1, 2]), Buffer.from(token), Buffer.from([255])]), { binary: true });
      return;
    }
    if (path === "/control-echo") {
      // The token in a ping, and in the close reason (with a long tail of two-byte characters, cut to fit).
      const token = String(req.headers["x-token"]);
      ws.ping(`p:${token}`);
      ws.once("pong", () => ws.close(4001, `token ${token} expired ${"é".repeat(40)}`));
      return;
    }
    if (path === "/masked-frame") {
      // A server must never mask (RFC 6455 5.1): a masked text frame "hi".
      (ws as unknown as { _socket: import("node:net").Socket })._socket.write(Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2]));
      return;
    }
    ws.on("message", (data, isBinary) => {
      const list = received.get(path) ?? [];
      list.push(isBinary ? (data as Buffer) : data.toString());
      received.set(path, list);
      ws.send(data, { binary: isBinary });
    });
  });
  const names = ["echo.test", "chat.test", "inspect.test", "raw.test"];
  proxy = await startProxy(`
version: 1
upstream:
  trust: [${JSON.stringify(pki.caFile)}]
  resolve: { ${names.map((name) => `${name}: 127.0.0.1`).join(", ")} }
network:
  default: allow
  allow_ips: [127.0.0.1/32]
secrets:
  tok: { env: PCX_WSM_SECRET }
  chat: { env: PCX_WSM_CHAT }
credentials:
  - { name: echo-token, hosts: [echo.test], header: { name: X-Token, value: "\${secrets.tok}" } }
placeholders:
  - { name: chat-key, placeholder: ${PLACEHOLDER}, secret: chat, hosts: [chat.test], in: [websocket] }
websocket:
  - { name: inspect-all, hosts: [inspect.test], inspect: true, max_message_bytes: 64KiB }
`);
});

afterAll(async () => {
  await proxy?.close();
  for (const client of wss?.clients ?? []) client.terminate();
  await new Promise<void>((resolve) => (wss ? wss.close(() => resolve()) : resolve()));
  await upstream?.close();
});

function open(host: string, path: string, options: WebSocket.ClientOptions = {}): Promise<WebSocket> {
  const ws = new WebSocket(`wss://${host}:${upstream.port}${path}`, { agent: proxy.agent(), ca: proxy.caPem, ...options });
  return new Promise((resolve, reject) => ws.once("open", () => resolve(ws)).once("error", reject));
}

function nextMessage(ws: WebSocket): Promise<{ data: Buffer; binary: boolean }> {
  return new Promise((resolve) => ws.once("message", (data, binary) => resolve({ data: data as Buffer, binary })));
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })));
}

describe("inspected WebSocket sessions", () => {
  it("scrubs a secret the upstream echoes in text and binary messages, and counts the messages", async () => {
    const ws = await open("echo.test", "/whoami");
    const text = await nextMessage(ws);
    const binary = await nextMessage(ws);
    expect(text.data.toString()).toBe("your token is [REDACTED]");
    expect(binary.binary).toBe(true);
    expect(binary.data).toEqual(Buffer.concat([Buffer.from([0, 1, 2]), Buffer.from("[REDACTED]"), Buffer.from([255])]));
    ws.close(1000);
    const line = await proxy.audit.waitFor((l) => l.msg === "websocket" && l.path === "/whoami");
    expect((line.ws as { messages: unknown }).messages).toEqual({ client: 0, upstream: 2, denied: 0, scrubbed: 2 });
    expect(JSON.stringify(proxy.audit.raw)).not.toContain(SECRET);
  });

  it("scrubs a secret the upstream echoes in a ping's data and a close frame's reason", async () => {
    const ws = await open("echo.test", "/control-echo");
    const ping = new Promise<Buffer>((resolve) => ws.once("ping", resolve));
    const closed = new Promise<{ code: number; reason: Buffer }>((resolve) => ws.once("close", (code, reason) => resolve({ code, reason })));
    expect((await ping).toString()).toBe("p:[REDACTED]");
    const { code, reason } = await closed;
    expect(code).toBe(4001);
    const text = reason.toString();
    expect(text.startsWith("token [REDACTED] expired éé")).toBe(true);
    expect(text).not.toContain(SECRET);
    // Still a whole UTF-8 reason within the frame's 123 bytes.
    expect(reason.length).toBeLessThanOrEqual(123);
    expect(Buffer.from(text).equals(reason)).toBe(true);
  });

  describe.each([
    ["no compression", false],
    ["permessage-deflate", true],
    ["no context takeover both ways", { serverNoContextTakeover: true, clientNoContextTakeover: true }],
    ["small windows", { serverMaxWindowBits: 10, clientMaxWindowBits: 9 }],
  ] as const)("relays messages intact with %s", (_name, perMessageDeflate) => {
    it("both ways, text and binary, with the extension both ends negotiated", async () => {
      const path = `/echo-${String(_name).replace(/\W+/g, "-")}`;
      const ws = await open("inspect.test", path, { perMessageDeflate });
      const messages: (string | Buffer)[] = ["x".repeat(20_000), "hello", Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 256)), "y".repeat(30_000)];
      for (const message of messages) {
        const echoed = nextMessage(ws);
        ws.send(message);
        const back = await echoed;
        expect(back.binary ? back.data : back.data.toString()).toEqual(message);
      }
      expect(received.get(path)).toEqual(messages);
      const negotiated = ws.extensions;
      ws.close(1000, "bye");
      const line = await proxy.audit.waitFor((l) => l.msg === "websocket" && l.path === path);
      const summary = line.ws as { messages: Record<string, number>; extensions: string | null; close_code: number };
      expect(summary.messages).toMatchObject({ client: 4, upstream: 4 });
      expect(summary.close_code).toBe(1000);
      // The client sees the extension the upstream chose, with the upstream's parameters.
      expect(negotiated).toBe(perMessageDeflate ? "permessage-deflate" : "");
      if (perMessageDeflate) expect(summary.extensions).toMatch(/^permessage-deflate/);
      if (typeof perMessageDeflate === "object") for (const param of Object.keys(perMessageDeflate)) expect(summary.extensions).toContain(param.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`));
    });
  });

  it("reassembles a fragmented message and passes a ping sent between its fragments", async () => {
    const ws = await open("inspect.test", "/fragments");
    const echoed = nextMessage(ws);
    ws.send("first half, ", { fin: false });
    ws.ping("between");
    ws.send("second half", { fin: true });
    expect((await echoed).data.toString()).toBe("first half, second half");
    expect(received.get("/fragments")).toEqual(["first half, second half"]);
    expect(pings).toContain("between");
    ws.close();
  });

  it("swaps a placeholder in a client's message for its host, and scrubs the echo", async () => {
    const ws = await open("chat.test", "/chat");
    const echoed = nextMessage(ws);
    ws.send(`{"api_key":"${PLACEHOLDER}"}`);
    expect((await echoed).data.toString()).toBe('{"api_key":"[REDACTED]"}');
    expect(received.get("/chat")).toEqual([`{"api_key":"${CHAT_SECRET}"}`]);
    ws.close();
    expect(await proxy.audit.waitFor((l) => l.msg === "websocket" && l.path === "/chat")).toMatchObject({ placeholders: ["chat-key"] });
  });

  it("keeps a direction's order when some messages wait for a secret and the others are judged at once", async () => {
    // No compression: deflating and inflating are asynchronous and would space the messages out.
    const ws = await open("chat.test", "/order", { perMessageDeflate: false });
    // Every third message holds the placeholder: resolving its secret is asynchronous, a message
    // without one is judged synchronously, so each later message must wait for the ones before it.
    const sent = Array.from({ length: 60 }, (_, i) => (i % 3 === 0 ? `{"n":${i},"api_key":"${PLACEHOLDER}"}` : `{"n":${i}}`));
    const echoes: string[] = [];
    const all = new Promise<void>((resolve) => ws.on("message", (data) => echoes.push(String(data)) === sent.length && resolve()));
    // Corked, so that the 60 frames reach portcullis in one TLS record and are parsed in one go.
    const socket = (ws as unknown as { _socket: import("node:net").Socket })._socket;
    socket.cork();
    for (const message of sent) ws.send(message);
    socket.uncork();
    await all;
    expect(received.get("/order")).toEqual(sent.map((message) => message.replace(PLACEHOLDER, CHAT_SECRET)));
    expect(echoes).toEqual(sent.map((message) => message.replace(PLACEHOLDER, "[REDACTED]")));
    ws.close();
  });

  it("ends the session with 1008 and a denied line when a placeholder is headed to a host not listed for it", async () => {
    const ws = await open("inspect.test", "/exfil");
    const end = closed(ws);
    ws.send(`steal ${PLACEHOLDER}`);
    expect((await end).code).toBe(1008);
    expect(received.get("/exfil")).toBeUndefined();
    const line = await proxy.audit.waitFor((l) => l.path === "/exfil" && l.msg === "denied");
    expect(line).toMatchObject({ rule: "chat-key", placeholders: ["chat-key"] });
    expect((line.ws as { messages: Record<string, number> }).messages.denied).toBe(1);
  });

  it("closes both sides with 1009 for a message over max_message_bytes; other sessions carry on", async () => {
    const before = upstreamCloses.length;
    const big = await open("inspect.test", "/big");
    const bystander = await open("inspect.test", "/bystander");
    const end = closed(big);
    big.send("z".repeat(100 * 1024));
    expect((await end).code).toBe(1009);
    await new Promise<void>((resolve) => (upstreamCloses.length > before ? resolve() : wss.clients.forEach((c) => c.once("close", () => resolve()))));
    expect(upstreamCloses.slice(before)).toContain(1009);
    const echoed = nextMessage(bystander);
    bystander.send("still here");
    expect((await echoed).data.toString()).toBe("still here");
    bystander.close();
  });

  it.each([
    ["an unmasked client frame", Buffer.from([0x81, 0x02, 0x68, 0x69]), 1002],
    ["a text message that is not UTF-8", Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe]), 1007],
  ])("closes the session for %s", async (_what, frame, code) => {
    const ws = await open("inspect.test", `/bad-${code}`);
    const end = closed(ws);
    (ws as unknown as { _socket: import("node:net").Socket })._socket.write(frame);
    expect((await end).code).toBe(code);
    const line = await proxy.audit.waitFor((l) => l.path === `/bad-${code}` && l.msg === "websocket");
    expect(line).toMatchObject({ ws: { close_code: code, closed_by: "error" }, error: { type: "websocket_protocol_error" } });
  });

  it("closes the session for a masked frame from the upstream", async () => {
    const ws = await open("inspect.test", "/masked-frame");
    expect((await closed(ws)).code).toBe(1002);
  });

  it("leaves sessions nobody must read as a byte copy (no message counts)", async () => {
    // With no credential, placeholder or rule for the host, nothing needs the messages.
    const bare = await startProxy(`version: 1\nupstream:\n  trust: [${JSON.stringify(pki.caFile)}]\n  resolve: { raw.test: 127.0.0.1 }\nnetwork:\n  default: allow\n  allow_ips: [127.0.0.1/32]\n`);
    try {
      const ws = new WebSocket(`wss://raw.test:${upstream.port}/raw`, { agent: bare.agent(), ca: bare.caPem });
      await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
      const echoed = nextMessage(ws);
      ws.send("plain");
      expect((await echoed).data.toString()).toBe("plain");
      ws.close();
      const line = await bare.audit.waitFor((l) => l.msg === "websocket" && l.path === "/raw");
      expect((line.ws as { messages?: unknown }).messages).toBeUndefined();
    } finally {
      await bare.close();
    }
  });
});
