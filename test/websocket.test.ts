import type { IncomingMessage } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { startWsUpstream, type TestWsUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let proxy: TestProxy;
let upstream: TestWsUpstream;
let plainUpstream: TestWsUpstream;
const EXECD_TOKEN = "execd-token-value";

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startWsUpstream(pki, {
    perMessageDeflate: true,
    handleProtocols: (protocols) => (protocols.has("v2.chat") ? "v2.chat" : false),
    verifyClient: (info, callback) => {
      const url = new URL(info.req.url ?? "/", "https://x");
      if (url.pathname === "/execd" && info.req.headers["x-execd-access-token"] !== EXECD_TOKEN) {
        callback(false, 401, "Unauthorized", { "Content-Type": "application/json", "X-Upstream-Reason": "bad token" });
        return;
      }
      if (url.pathname === "/needs-query" && url.searchParams.get("token") !== "q-token") return callback(false, 403, "Forbidden");
      callback(true);
    },
  }, false);
  upstream.wss.on("headers", (headers) => headers.push("X-Upstream-Hello: 1"));
  upstream.wss.on("connection", (ws, req) => {
    if (req.url === "/server-closes") {
      ws.close(4001, "done here");
      return;
    }
    if (req.url === "/headers") {
      ws.send(JSON.stringify(req.rawHeaders));
      return;
    }
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  plainUpstream = await startWsUpstream(pki, {}, true);
  // plainUpstream is HTTPS too; a plain ws:// upstream is below.
  proxy = await startProxy(policyTrusting(pki.caFile), { timeouts: { headersMs: 400, keepAliveMs: 400 } });
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
  await plainUpstream?.close();
});

function open(url: string, options: WebSocket.ClientOptions & { protocols?: string[] } = {}): Promise<WebSocket> {
  const { protocols, ...rest } = options;
  const ws = new WebSocket(url, protocols ?? [], { agent: proxy.agent(), ca: proxy.caPem, ...rest });
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
    ws.once("unexpected-response", (_req, res) => reject(Object.assign(new Error(`unexpected ${res.statusCode}`), { res })));
  });
}

function nextMessage(ws: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve) => ws.once("message", (data, isBinary) => resolve({ data: data as Buffer, isBinary })));
}

function closed(ws: WebSocket): Promise<number> {
  return new Promise((resolve) => ws.once("close", (code) => resolve(code)));
}

const wss = () => `wss://localhost:${upstream.port}`;

describe("WebSocket through the proxy", () => {
  it("echoes text and binary frames", async () => {
    const ws = await open(`${wss()}/echo`);
    ws.send("hello text");
    expect(await nextMessage(ws)).toMatchObject({ isBinary: false });
    const binary = Buffer.from([0, 1, 2, 255, 254]);
    const reply = nextMessage(ws);
    ws.send(binary);
    const got = await reply;
    expect(got.isBinary).toBe(true);
    expect(Buffer.compare(got.data, binary)).toBe(0);
    ws.close(1000);
    await closed(ws);
  });

  it("sends every end-to-end handshake header upstream: custom auth, Authorization, Cookie, Origin, Sec-WebSocket-*", async () => {
    const ws = await open(`${wss()}/headers`, {
      headers: { "X-EXECD-ACCESS-TOKEN": EXECD_TOKEN, Authorization: "Bearer agent-bearer", Cookie: "session=abc" },
      origin: "https://app.example",
      protocols: ["v2.chat"],
    });
    const { data } = await nextMessage(ws);
    const raw = JSON.parse(data.toString()) as string[];
    const header = (name: string) => raw[raw.findIndex((v, i) => i % 2 === 0 && v.toLowerCase() === name) + 1];
    expect(header("x-execd-access-token")).toBe(EXECD_TOKEN);
    expect(header("authorization")).toBe("Bearer agent-bearer");
    expect(header("cookie")).toBe("session=abc");
    expect(header("origin")).toBe("https://app.example");
    expect(header("sec-websocket-protocol")).toBe("v2.chat");
    expect(header("sec-websocket-key")).toMatch(/^[A-Za-z0-9+/]{22}==$/);
    expect(header("sec-websocket-version")).toBe("13");
    expect(header("upgrade")).toBe("websocket");
    expect(header("x-request-id")).toBeDefined();
    ws.close();
    await closed(ws);
  });

  it("passes the custom token header the upstream requires (execd) and opens", async () => {
    const ws = await open(`${wss()}/execd`, { headers: { "X-EXECD-ACCESS-TOKEN": EXECD_TOKEN } });
    ws.send("ping");
    expect((await nextMessage(ws)).data.toString()).toBe("ping");
    ws.close();
    await closed(ws);
  });

  it("relays the upstream's own 401 (status, headers, body), never a 101", async () => {
    const error = (await open(`${wss()}/execd`, { headers: { "X-EXECD-ACCESS-TOKEN": "wrong" } }).catch((e: unknown) => e)) as Error & { res: IncomingMessage };
    expect(error.res.statusCode).toBe(401);
    expect(error.res.headers["x-upstream-reason"]).toBe("bad token");
    let body = "";
    for await (const chunk of error.res) body += chunk;
    expect(body).toBe("Unauthorized");
    const line = await proxy.audit.waitFor((l) => l.path === "/execd" && l.status === 401);
    expect(line.msg).toBe("http");
    expect((line.req_headers as Record<string, string>)["X-EXECD-ACCESS-TOKEN"]).toBe("wrong");
  });

  it("keeps a token in the query string intact", async () => {
    const ws = await open(`${wss()}/needs-query?token=q-token&x=1`);
    ws.close();
    await closed(ws);
    expect(upstream.seen.some((seen) => seen.url === "/needs-query?token=q-token&x=1")).toBe(true);
    const refused = (await open(`${wss()}/needs-query?token=nope`).catch((e: unknown) => e)) as Error & { res: IncomingMessage };
    expect(refused.res.statusCode).toBe(403);
  });

  it("negotiates Sec-WebSocket-Protocol end to end and relays the upstream's 101 headers", async () => {
    const ws = new WebSocket(`${wss()}/echo`, ["v1.chat", "v2.chat"], { agent: proxy.agent(), ca: proxy.caPem });
    const upgrade = new Promise<IncomingMessage>((resolve) => ws.once("upgrade", resolve));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    expect(ws.protocol).toBe("v2.chat");
    const res = await upgrade;
    expect(res.headers["x-upstream-hello"]).toBe("1");
    expect(res.headers["sec-websocket-accept"]).toBeDefined();
    ws.close();
    await closed(ws);
  });

  it("works with permessage-deflate negotiated between the client and the upstream", async () => {
    const ws = await open(`${wss()}/echo`, { perMessageDeflate: true });
    expect(ws.extensions).toContain("permessage-deflate");
    const big = "compress me ".repeat(10_000);
    ws.send(big);
    expect((await nextMessage(ws)).data.toString()).toBe(big);
    ws.close();
    await closed(ws);
    const line = await proxy.audit.waitFor((l) => l.msg === "websocket" && String((l.ws as { extensions?: string }).extensions).includes("permessage-deflate"));
    // Compressed on the wire: far fewer bytes crossed the proxy than the text's length.
    expect(line.req_bytes).toBeLessThan(big.length / 10);
  });

  it("writes one websocket audit line at close with bytes, protocol and close code", async () => {
    const ws = await open(`${wss()}/echo`, { protocols: ["v2.chat"], perMessageDeflate: false, headers: { "x-request-id": "ws-audit-1" } });
    ws.send("x".repeat(100));
    await nextMessage(ws);
    ws.close(1000, "bye");
    await closed(ws);
    const line = await proxy.audit.waitFor((l) => l.req_id === "ws-audit-1");
    expect(line).toMatchObject({ msg: "websocket", status: 101, method: "GET", path: "/echo", level: 30 });
    expect(line.ws).toMatchObject({ protocol: "v2.chat", close_code: 1000, closed_by: "client" });
    // 100-byte payload + frame headers + mask, each way, plus the close frames.
    expect(line.req_bytes).toBeGreaterThan(100);
    expect(line.resp_bytes).toBeGreaterThan(100);
    expect(proxy.audit.lines.filter((l) => l.req_id === "ws-audit-1")).toHaveLength(1);
  });

  it("records an upstream-initiated close", async () => {
    const ws = await open(`${wss()}/server-closes`, { headers: { "x-request-id": "ws-audit-2" } });
    expect(await closed(ws)).toBe(4001);
    const line = await proxy.audit.waitFor((l) => l.req_id === "ws-audit-2");
    expect(line.ws).toMatchObject({ close_code: 4001, closed_by: "upstream" });
  });

  it("refuses an upgrade request that carries a body (400), without asking the upstream", async () => {
    const { rawExchange } = await import("./helpers/tunnel.js");
    const before = upstream.seen.length;
    const reply = rawExchange(proxy.port, "localhost", upstream.port, proxy.caPem, `GET /echo HTTP/1.1\r\nHost: localhost:${upstream.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\nhello`);
    expect(await reply).toMatch(/^HTTP\/1\.1 400 [\s\S]*cannot carry a body/);
    expect(upstream.seen.length).toBe(before);
  });

  it.each([
    ["a token list with websocket in it", "Upgrade: h2c, websocket\r\n"],
    ["websocket twice", "Upgrade: websocket\r\nUpgrade: websocket\r\n"],
    ["another protocol", "Upgrade: raw\r\n"],
  ])("refuses an Upgrade that is not one websocket token (%s) with 400, without asking the upstream", async (_what, upgrade) => {
    const { rawExchange } = await import("./helpers/tunnel.js");
    const before = upstream.seen.length;
    const reply = rawExchange(proxy.port, "localhost", upstream.port, proxy.caPem, `GET /echo HTTP/1.1\r\nHost: localhost:${upstream.port}\r\n${upgrade}Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    expect(await reply).toMatch(/^HTTP\/1\.1 400 [\s\S]*relays WebSocket upgrades only/);
    expect(upstream.seen.length).toBe(before);
  });

  it("forwards a request offering h2c as plain HTTP/1.1 (the offer may be ignored, RFC 9110 7.8), without its Upgrade or HTTP2-Settings", async () => {
    const { rawExchange } = await import("./helpers/tunnel.js");
    const before = upstream.seen.length;
    const reply = await rawExchange(proxy.port, "localhost", upstream.port, proxy.caPem, `GET /page HTTP/1.1\r\nHost: localhost:${upstream.port}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n`);
    expect(reply).toMatch(/^HTTP\/1\.1 404 [\s\S]*no such page/);
    expect(upstream.seen.length).toBe(before + 1);
    const names = upstream.seen.at(-1)!.rawHeaders.filter((_, i) => i % 2 === 0).map((name) => name.toLowerCase());
    expect(names).not.toContain("upgrade");
    expect(names).not.toContain("http2-settings");
  });

  it("answers 502 JSON on the handshake when the upstream is unreachable", async () => {
    const port = upstream.port;
    const dead = await startWsUpstream(pki);
    const deadPort = dead.port;
    await dead.close();
    const error = (await open(`wss://localhost:${deadPort}/x`).catch((e: unknown) => e)) as Error & { res: IncomingMessage };
    expect(error.res.statusCode).toBe(502);
    expect(error.res.headers["x-portcullis-error"]).toBe("upstream_unreachable");
    expect(port).not.toBe(deadPort);
  });

  it("outlives the client-side header and keep-alive timeouts once upgraded", async () => {
    const ws = await open(`${wss()}/echo`);
    // Idle for longer than both client-side timeouts (400 ms): an upgraded socket is exempt from them.
    await new Promise((resolve) => setTimeout(resolve, 1200));
    ws.send("still here");
    expect((await nextMessage(ws)).data.toString()).toBe("still here");
    ws.close();
    await closed(ws);
  });

  it("many sessions in parallel each get their own echo", async () => {
    const sockets = await Promise.all(Array.from({ length: 20 }, () => open(`${wss()}/echo`)));
    const replies = await Promise.all(
      sockets.map((ws, i) => {
        const reply = nextMessage(ws);
        ws.send(`message ${i}`);
        return reply;
      }),
    );
    expect(replies.map((r) => r.data.toString())).toEqual(sockets.map((_, i) => `message ${i}`));
    await Promise.all(sockets.map((ws) => (ws.close(), closed(ws))));
  });
});
