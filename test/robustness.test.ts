import { readdirSync } from "node:fs";
import https from "node:https";
import { connect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { request } from "undici";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { openConnect, openTlsTunnel, readAll } from "./helpers/tunnel.js";
import { startWsUpstream, type TestWsUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let upstream: TestWsUpstream;
let proxy: TestProxy;

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startWsUpstream(pki);
  upstream.server.removeAllListeners("request");
  upstream.server.on("request", (req, res) => {
    req.resume();
    // Every response closes its connection, so a clean proxy returns to its exact fd count.
    res.writeHead(200, { Connection: "close", "Content-Type": "text/plain" });
    if (req.url === "/slow-body") {
      res.write("partial");
      return;
    }
    res.end("ok");
  });
  proxy = await startProxy(policyTrusting(pki.caFile), { timeouts: { headersMs: 500, keepAliveMs: 500 } });
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

async function stillServes(): Promise<void> {
  const res = await request(`https://localhost:${upstream.port}/ok`, { dispatcher: proxy.dispatcher });
  expect(res.statusCode).toBe(200);
  expect(await res.body.text()).toBe("ok");
}

describe("bad input is answered or closed, logged once, and everyone else is served", () => {
  it("garbage after CONNECT gets a 400 inside the tunnel and one audit line", async () => {
    const socket = await openConnect(proxy.port, `localhost:${upstream.port}`);
    const reply = readAll(socket);
    socket.write("\x00\x01garbage that is neither TLS nor HTTP\r\n\r\n");
    expect(await reply).toMatch(/^HTTP\/1\.1 400 /);
    const line = await proxy.audit.waitFor((l) => l.port === upstream.port && l.status === 400 && l.method === null);
    expect(line.error).toMatchObject({ type: "bad_request" });
    await stillServes();
  });

  it("malformed HTTP inside a TLS tunnel gets a 400", async () => {
    const tls = await openTlsTunnel(proxy.port, `localhost:${upstream.port}`, { servername: "localhost", ca: proxy.caPem });
    const reply = readAll(tls as unknown as import("node:net").Socket);
    tls.write("GET / HTTP/1.1\r\nHost: localhost\r\nBad Header Without Colon\r\n\r\n");
    expect(await reply).toMatch(/^HTTP\/1\.1 400 /);
    await stillServes();
  });

  it("a CONNECT without host:port gets 400 on the CONNECT", async () => {
    await expect(openConnect(proxy.port, "no-port-here")).rejects.toThrow(/400/);
    await stillServes();
  });

  it("a client that does not trust the CA fails its handshake, logged once, without harming others", async () => {
    const before = proxy.audit.lines.length;
    const error = await openTlsTunnel(proxy.port, `localhost:${upstream.port}`, { servername: "localhost" }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    const line = await proxy.audit.waitFor((l) => l.msg === "tunnel" && (l.error as { type?: string } | undefined)?.type === "client_tls_error");
    expect(line.host).toBe("localhost");
    expect(proxy.audit.lines.slice(before).filter((l) => l.msg === "tunnel")).toHaveLength(1);
    await stillServes();
  });

  it("closes a connection that sends headers too slowly (slowloris)", async () => {
    const socket = connect(proxy.port, "127.0.0.1");
    const reply = readAll(socket);
    socket.write("GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
    // Nothing more is sent; the 500 ms header timeout must end it.
    const text = await reply;
    expect(text === "" || /^HTTP\/1\.1 40[08]/.test(text)).toBe(true);
    await stillServes();
  });

  it("closes a TLS tunnel whose request headers come too slowly", async () => {
    const tls = await openTlsTunnel(proxy.port, `localhost:${upstream.port}`, { servername: "localhost", ca: proxy.caPem });
    const reply = readAll(tls as unknown as import("node:net").Socket);
    tls.write(`GET /ok HTTP/1.1\r\nHost: localhost:${upstream.port}\r\nX-Slow: `);
    const text = await reply;
    expect(text === "" || /^HTTP\/1\.1 40[08]/.test(text)).toBe(true);
  });

  it("closes a tunnel whose client never speaks after CONNECT", async () => {
    const socket = await openConnect(proxy.port, `localhost:${upstream.port}`);
    await new Promise<void>((resolve) => socket.once("close", () => resolve()));
  });
});

describe("no descriptor leaks", () => {
  function openFds(): number {
    return readdirSync("/proc/self/fd").length;
  }

  async function httpThroughNewTunnel(): Promise<void> {
    const agent = proxy.agent();
    await new Promise<void>((resolve, reject) => {
      https.get(`https://localhost:${upstream.port}/ok`, { agent, ca: proxy.caPem }, (res) => {
        res.resume();
        res.on("end", () => resolve());
      }).on("error", reject);
    });
    agent.destroy();
  }

  async function websocketSession(): Promise<void> {
    const ws = new WebSocket(`wss://localhost:${upstream.port}/`, { agent: proxy.agent(), ca: proxy.caPem });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const reply = new Promise((resolve) => ws.once("message", resolve));
    ws.send("x");
    await reply;
    const closed = new Promise((resolve) => ws.once("close", resolve));
    ws.close();
    await closed;
  }

  async function abortedMidResponse(): Promise<void> {
    const tls = await openTlsTunnel(proxy.port, `localhost:${upstream.port}`, { servername: "localhost", ca: proxy.caPem });
    tls.write(`GET /slow-body HTTP/1.1\r\nHost: localhost:${upstream.port}\r\n\r\n`);
    await new Promise((resolve) => tls.once("data", resolve));
    tls.destroy();
  }

  async function abortedMidHandshake(): Promise<void> {
    const socket = await openConnect(proxy.port, `localhost:${upstream.port}`);
    const tls = tlsConnect({ socket, servername: "localhost", ca: proxy.caPem });
    tls.on("error", () => undefined);
    tls.destroy();
    socket.destroy();
  }

  it("returns to its baseline after 500 connections (HTTP, WebSocket, aborted) open and close", { timeout: 60_000 }, async () => {
    await stillServes();
    await websocketSession();
    await abortedMidResponse();
    await expect.poll(openFds, { timeout: 10_000, interval: 50 }).toBeLessThanOrEqual(openFds());
    const baseline = openFds();
    const kinds = [httpThroughNewTunnel, websocketSession, abortedMidResponse, abortedMidHandshake, httpThroughNewTunnel];
    for (let batch = 0; batch < 25; batch++) {
      await Promise.all(Array.from({ length: 20 }, (_, i) => kinds[(batch * 20 + i) % kinds.length]!()));
    }
    await expect.poll(openFds, { timeout: 15_000, interval: 100 }).toBeLessThanOrEqual(baseline);
  });
});
