import { connect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { openConnect } from "./helpers/tunnel.js";
import { startUpstream, startWsUpstream, type TestUpstream } from "./helpers/upstream.js";
import { HttpsProxyAgent } from "https-proxy-agent";
import WebSocket from "ws";

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: TestProxy;
let releaseSlow!: () => void;
const slowReleased = new Promise<void>((resolve) => (releaseSlow = resolve));

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => {
    req.resume();
    if (req.url === "/hang") {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.write("and then nothing");
      return;
    }
    if (req.url === "/slow") {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.write("first half, ");
      void slowReleased.then(() => res.end("second half"));
      return;
    }
    res.end(`hello from ${req.url}`);
  }, pki);
  proxy = await startProxy(policyTrusting(pki.caFile, "passthrough:\n  hosts: [localhost]\n"));
});

afterAll(async () => {
  releaseSlow();
  await proxy?.close();
  await upstream?.close();
});

describe("passthrough", () => {
  it("tunnels a listed host without interception: the client sees the upstream's own certificate", async () => {
    const socket = await openConnect(proxy.port, `localhost:${upstream.port}`);
    const tls = tlsConnect({ socket, servername: "localhost", ca: pki.caPem });
    await new Promise((resolve, reject) => tls.once("secureConnect", resolve).once("error", reject));
    expect(tls.getPeerX509Certificate()!.issuer).toContain("upstream test CA");
    tls.write(`GET /through HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    let body = "";
    tls.on("data", (chunk: Buffer) => (body += chunk.toString()));
    await new Promise((resolve) => tls.once("close", resolve));
    socket.destroy();
    expect(body).toContain("hello from /through");
    const line = await proxy.audit.waitFor((l) => l.msg === "tunnel" && l.host === "localhost" && l.status === 200);
    expect(line.req_bytes).toBeGreaterThan(0);
    expect(line.resp_bytes).toBeGreaterThan(body.length);
    expect(line.method).toBe("CONNECT");
  });

  it("answers the CONNECT with 502 when a passthrough upstream is unreachable", async () => {
    const gone = await startUpstream((_req, res) => res.end());
    const port = gone.port;
    await gone.close();
    await expect(openConnect(proxy.port, `localhost:${port}`)).rejects.toThrow(/502/);
    await proxy.audit.waitFor((l) => l.msg === "tunnel" && l.port === port && l.status === 502);
  });
});

describe("drain", () => {
  it("lets an in-flight request finish after close() starts and refuses new connections", async () => {
    const drained = await startProxy(policyTrusting(pki.caFile));
    const res = await request(`https://127.0.0.1:${upstream.port}/slow`, { dispatcher: drained.dispatcher });
    const iterator = res.body[Symbol.asyncIterator]();
    expect(Buffer.from((await iterator.next()).value as Buffer).toString()).toBe("first half, ");
    const closing = drained.proxy.close({ graceMs: 10_000 });
    // The listener stops accepting at once.
    await expect(
      new Promise((resolve, reject) => connect(drained.port, "127.0.0.1").once("connect", resolve).once("error", reject)),
    ).rejects.toThrow(/ECONNREFUSED/);
    releaseSlow();
    let rest = "";
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) rest += Buffer.from(next.value as Buffer).toString();
    expect(rest).toBe("second half");
    // The finished keep-alive tunnel is idle now and is closed at once, well before the 10 s grace.
    const finishedAt = Date.now();
    await closing;
    expect(Date.now() - finishedAt).toBeLessThan(3000);
    await drained.dispatcher.close();
  });

  it("writes the line of every exchange it cuts at the end of the grace: a request its upstream never finishes, a WebSocket session", async () => {
    const ws = await startWsUpstream(pki);
    const drained = await startProxy(policyTrusting(pki.caFile));
    try {
      const res = await request(`https://127.0.0.1:${upstream.port}/hang`, { dispatcher: drained.dispatcher, headers: { "x-request-id": "cut-http" } });
      const reading = res.body.text().catch(() => "cut");
      const session = new WebSocket(`wss://localhost:${ws.port}/cut`, { agent: new HttpsProxyAgent(`http://127.0.0.1:${drained.port}`), ca: drained.caPem, headers: { "x-request-id": "cut-ws" } });
      await new Promise((resolve, reject) => session.once("open", resolve).once("error", reject));
      const ended = new Promise((resolve) => session.once("close", resolve));
      await drained.proxy.close({ graceMs: 100 });
      await Promise.all([reading, ended]);
      const ids = drained.audit.lines.map((line) => line.req_id);
      expect(ids).toContain("cut-http");
      expect(ids).toContain("cut-ws");
      expect(drained.audit.lines.find((line) => line.req_id === "cut-ws")).toMatchObject({ msg: "websocket" });
    } finally {
      await drained.dispatcher.close();
      await ws.close();
    }
  });
});
