import { execFile } from "node:child_process";
import http2, { type Http2SecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { ProxyAgent, request } from "undici";
import { HttpsProxyAgent } from "https-proxy-agent";
import { createProxy, type Proxy } from "../src/index.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { AuditCapture } from "./helpers/proxy.js";
import { startUpstream, startWsUpstream, type TestUpstream, type TestWsUpstream } from "./helpers/upstream.js";
import { assertBuilt } from "./helpers/cli.js";

let pki: ServerPki;
let upstream: TestWsUpstream;
let proxy: Proxy;
let dispatcher: ProxyAgent;
let url: string;
const audit = new AuditCapture();

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startWsUpstream(pki, {}, false);
  upstream.server.removeAllListeners("request");
  upstream.server.on("request", (req, res) => {
    req.resume();
    res.writeHead(200, { "Content-Type": "application/json", "Set-Cookie": "a=1" }).end(JSON.stringify({ url: req.url, rawHeaders: req.rawHeaders }));
  });
  upstream.wss.on("connection", (ws, req) => ws.send(JSON.stringify({ url: req.url, rawHeaders: req.rawHeaders })));
  proxy = await createProxy({
    policy: {
      version: 1,
      ca: { dir: tempDir("hooks-ca") },
      upstream: { trust: [pki.caFile] },
      network: { default: "allow", allow_ips: ["127.0.0.1/32"] },
    },
    auditStream: audit,
    adminListen: null,
    listen: "127.0.0.1:0",
    hooks: {
      onRequest(ctx) {
        if (ctx.method === "DELETE") ctx.deny("no deleting from this sandbox");
        if (ctx.path === "/explode") throw new Error("hook bug");
        ctx.headers.set("X-Hooked", `${ctx.client ?? "anonymous"} ${ctx.method} ${ctx.host}`);
        if (ctx.path.startsWith("/old/")) ctx.path = ctx.path.replace("/old/", "/new/");
      },
    },
  });
  proxy
    .onResponse((ctx) => {
      ctx.headers.remove("set-cookie");
      ctx.headers.set("X-Seen-By-Hook", ctx.request.path);
      if (ctx.request.path === "/teapot") ctx.status = 418;
      if (ctx.request.path === "/response-explodes") throw new Error("response hook bug");
      if (ctx.request.path === "/bad-header") ctx.headers.set("X-Bad", "a\nb");
    })
    .onWebSocket((ctx) => {
      if (ctx.path.startsWith("/forbidden")) ctx.deny("not this socket");
      ctx.headers.set("X-WS-Hooked", "yes");
    });
  const address = await proxy.listen();
  url = `http://127.0.0.1:${address.port}`;
  dispatcher = new ProxyAgent({ uri: url, requestTls: { ca: proxy.caCertPem } });
});

afterAll(async () => {
  await dispatcher?.close();
  await proxy?.close();
  await upstream?.close();
});

const target = (path: string) => `https://localhost:${upstream.port}${path}`;

describe("programmatic API and hooks", () => {
  it("a hook added while the proxy runs, after traffic has flowed, judges the next request", async () => {
    const late = await createProxy({
      policy: { version: 1, ca: { dir: tempDir("late-hooks-ca") }, upstream: { trust: [pki.caFile] }, network: { default: "allow", allow_ips: ["127.0.0.1/32"] } },
      auditStream: new AuditCapture(),
      adminListen: null,
      listen: "127.0.0.1:0",
    });
    const lateDispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${(await late.listen()).port}`, requestTls: { ca: late.caCertPem } });
    try {
      const before = await request(target("/before"), { dispatcher: lateDispatcher });
      await before.body.text();
      expect(before.statusCode).toBe(200);
      late.onRequest((ctx) => ctx.deny("added later"));
      const after = await request(target("/after"), { dispatcher: lateDispatcher });
      expect(after.statusCode).toBe(403);
      expect(((await after.body.json()) as { error: { message: string } }).error.message).toBe("added later");
    } finally {
      await lateDispatcher.close();
      await late.close();
    }
  });

  it("onRequest changes headers and path before forwarding; onResponse changes the answer", async () => {
    const res = await request(target("/old/thing"), { dispatcher });
    const body = (await res.body.json()) as { url: string; rawHeaders: string[] };
    expect(body.url).toBe("/new/thing");
    expect(body.rawHeaders).toContain(`anonymous GET localhost`);
    expect(res.headers["set-cookie"]).toBeUndefined();
    expect(res.headers["x-seen-by-hook"]).toBe("/old/thing");
    const teapot = await request(target("/teapot"), { dispatcher });
    expect(teapot.statusCode).toBe(418);
    await teapot.body.text();
  });

  it("a hook's deny is a 403 with a denied audit line; a hook that throws refuses the request", async () => {
    const denied = await request(target("/x"), { method: "DELETE", dispatcher });
    expect(denied.statusCode).toBe(403);
    const body = (await denied.body.json()) as { error: { message: string; rule: string; request_id: string } };
    expect(body.error).toMatchObject({ message: "no deleting from this sandbox", rule: "hook:onRequest" });
    await audit.waitFor((l) => l.req_id === body.error.request_id && l.msg === "denied");
    const broken = await request(target("/explode"), { dispatcher });
    expect(broken.statusCode).toBe(403);
    expect(((await broken.body.json()) as { error: { message: string } }).error.message).toContain("hook bug");
  });

  it("an onResponse hook that throws is portcullis' own fault: 500 internal_error, never blamed on the upstream", async () => {
    const answer = await request(target("/response-explodes"), { dispatcher });
    expect(answer.statusCode).toBe(500);
    expect(answer.headers["x-portcullis-error"]).toBe("internal_error");
    const body = (await answer.body.json()) as { error: { type: string; message: string; request_id: string } };
    expect(body.error).toMatchObject({ type: "internal_error", message: "onResponse hook failed: response hook bug" });
    const line = await audit.waitFor((l) => l.req_id === body.error.request_id);
    expect(line).toMatchObject({ status: 500, error: { type: "internal_error" } });
    // A header a hook made that cannot be written is the same kind of fault: answered, not a hang.
    const bad = await request(target("/bad-header"), { dispatcher });
    expect(bad.statusCode).toBe(500);
    expect(bad.headers["x-portcullis-error"]).toBe("internal_error");
    await bad.body.text();
  });

  it("onWebSocket sees the handshake: adds headers or denies", async () => {
    const open = (path: string) => new WebSocket(`wss://localhost:${upstream.port}${path}`, { agent: new HttpsProxyAgent(url), ca: proxy.caCertPem });
    const ws = open("/ws/ok");
    const message = await new Promise<Buffer>((resolve, reject) => ws.once("message", (d) => resolve(d as Buffer)).once("error", reject));
    expect((JSON.parse(message.toString()) as { rawHeaders: string[] }).rawHeaders).toContain("X-WS-Hooked");
    ws.close();
    const refused = open("/forbidden");
    const status = await new Promise<number>((resolve) => refused.once("unexpected-response", (_req, res) => resolve(res.statusCode!)));
    expect(status).toBe(403);
  });

  it("is importable by package name from the build, as `import { createProxy } from \"portcullis\"`", async () => {
    assertBuilt();
    const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", 'import("portcullis").then((m) => console.log(typeof m.createProxy, typeof m.loadPolicyFile))'], {
      cwd: `${import.meta.dirname}/..`,
    });
    expect(stdout.trim()).toBe("function function");
  });
});

describe("an onResponse hook that awaits, and a body that is empty", () => {
  let h2Upstream: Http2SecureServer;
  let h1Upstream: TestUpstream;
  let slowProxy: Proxy;
  let slowDispatcher: ProxyAgent;
  const slowAudit = new AuditCapture();
  const contextKeys: string[][] = [];

  beforeAll(async () => {
    // `respond()` then `end()`: END_STREAM comes on an empty DATA frame after the HEADERS, and
    // Node reads it (and ends the stream) even while the relay holds the body for the hook.
    h2Upstream = http2.createSecureServer({ key: pki.key, cert: pki.ipCert, SNICallback: pki.sniCallback, allowHTTP1: false });
    h2Upstream.on("stream", (stream) => {
      stream.respond({ ":status": 200, "content-type": "text/plain" });
      stream.end();
    });
    await new Promise<void>((resolve) => h2Upstream.listen(0, "127.0.0.1", resolve));
    h1Upstream = await startUpstream((req, res) => (req.resume(), res.writeHead(200, { "Content-Length": "0" }).end()), pki);
    slowProxy = await createProxy({
      policy: { version: 1, ca: { dir: tempDir("hooks-slow-ca") }, upstream: { trust: [pki.caFile] }, network: { default: "allow", allow_ips: ["127.0.0.1/32"] } },
      auditStream: slowAudit,
      adminListen: null,
      listen: "127.0.0.1:0",
      hooks: {
        onRequest(ctx) {
          contextKeys.push(Object.keys(ctx).sort());
        },
        async onResponse(ctx) {
          await new Promise((resolve) => setTimeout(resolve, 30));
          ctx.headers.set("X-Hook-Waited", "30ms");
        },
      },
    });
    const address = await slowProxy.listen();
    slowDispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${address.port}`, requestTls: { ca: slowProxy.caCertPem }, headersTimeout: 5_000, bodyTimeout: 5_000 });
  });

  afterAll(async () => {
    await slowDispatcher?.close();
    await slowProxy?.close();
    await new Promise<void>((resolve) => (h2Upstream ? h2Upstream.close(() => resolve()) : resolve()));
    await h1Upstream?.close();
  });

  for (const upstreamKind of ["h2", "HTTP/1.1"] as const) {
    it(`still gets its answer from an ${upstreamKind} upstream, and one audit line`, async () => {
      const port = upstreamKind === "h2" ? (h2Upstream.address() as AddressInfo).port : h1Upstream.port;
      for (let i = 0; i < 3; i++) {
        const answer = await request(`https://localhost:${port}/empty-${i}`, { dispatcher: slowDispatcher });
        expect(answer.statusCode).toBe(200);
        expect(answer.headers["x-hook-waited"]).toBe("30ms");
        expect(await answer.body.text()).toBe("");
        const requestId = answer.headers["x-request-id"];
        const line = await slowAudit.waitFor((l) => l.path === `/empty-${i}` && l.port === port);
        expect(line).toMatchObject({ msg: "http", status: 200, resp_bytes: 0, upstream_version: upstreamKind === "h2" ? "2" : "1.1" });
        expect(line.error).toBeUndefined();
        if (requestId !== undefined) expect(line.req_id).toBe(requestId);
      }
    });
  }

  it("gives onRequest hooks the context's fields as its own properties", () => {
    expect(contextKeys.length).toBeGreaterThan(0);
    for (const keys of contextKeys) expect(keys).toEqual(["client", "deny", "headers", "host", "method", "path", "port", "requestId", "scheme", "webSocket"]);
  });
});
