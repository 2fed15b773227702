import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import WebSocket, { WebSocketServer } from "ws";
import { startH2Upstream, h2ThroughProxy, h2Request, type H2Upstream } from "./helpers/h2.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { freePort } from "./helpers/ports.js";
import { startSquid, type AccessLine, type Squid } from "./helpers/squid.js";
import { openConnect } from "./helpers/tunnel.js";
import { ProxyError } from "../src/core/errors.js";
import { Scrubber } from "../src/log/scrub.js";
import { DestinationGuard } from "../src/policy/destinations.js";
import { UpstreamConnector } from "../src/transport/upstream/connector.js";
import { createLookup } from "../src/transport/upstream/lookup.js";
import { ParentProxy } from "../src/transport/upstream/parent-proxy.js";
import { buildUpstreamTrust } from "../src/transport/upstream/trust.js";
import { startUpstream, startWsUpstream, type TestUpstream, type TestWsUpstream } from "./helpers/upstream.js";

const PASSWORD = "squid-pass-7f3a9c";
const WRONG = "not-the-password-51b2";

let pki: ServerPki;
let caDir: string;
let https1: TestUpstream;
let private2: TestUpstream;
/** Reached only by the no_proxy test: any squid line with its port would be a bypass that did not bypass. */
let direct: TestUpstream;
/** A token endpoint reached by the exported connector, as the minted-secret sources reach theirs. */
let tokenEndpoint: TestUpstream;
let plain: TestUpstream;
let h2: H2Upstream;
let wsUpstream: TestWsUpstream;
let plainWs: TestUpstream;
let squid: Squid;
let authSquid: Squid;
let silent: NetServer;
/** A port squid may CONNECT to where nothing listens: the parent cannot reach the destination. */
let deadPort: number;
const silentSockets = new Set<Socket>();
const proxies: TestProxy[] = [];

/** The upstream saw these client ports: one per connection it accepted. */
const https1Ports: number[] = [];

beforeAll(async () => {
  pki = await makeUpstreamPki("parent-upstream");
  caDir = tempDir("parent-ca");
  https1 = await startUpstream((req, res) => {
    https1Ports.push(req.socket.remotePort ?? 0);
    req.resume();
    res.end(`tls hello ${req.url} host=${req.headers.host}`);
  }, pki);
  tokenEndpoint = await startUpstream((req, res) => {
    req.resume();
    res.setHeader("Content-Type", "application/json").end(JSON.stringify({ access_token: "minted", path: req.url, host: req.headers.host }));
  }, pki);
  direct = await startUpstream((req, res) => res.end(`direct hello ${req.url} host=${req.headers.host}`), pki);
  plain = await startUpstream((req, res) => {
    req.resume();
    res.end(`plain hello ${req.url} host=${req.headers.host} via=${req.headers["proxy-authorization"] ? "leaked" : "none"}`);
  });
  h2 = await startH2Upstream(pki, (stream, headers) => {
    stream.respond({ ":status": 200, "content-type": "text/plain" });
    stream.end(`h2 hello ${headers[":path"]} version=${stream.session?.alpnProtocol}`);
  });
  wsUpstream = await startWsUpstream(pki);
  plainWs = await startUpstream((_req, res) => res.writeHead(404).end());
  const plainWss = new WebSocketServer({ server: plainWs.server });
  plainWss.on("connection", (ws) => ws.on("message", (data) => ws.send(`plain echo: ${data.toString()}`)));
  // A destination on 127.0.0.2: private like the parent's 127.0.0.1, but the only one allow_ips lists in the SSRF test.
  private2 = await startUpstream((_req, res) => res.end("from 127.0.0.2"), pki);
  await new Promise<void>((resolve) => private2.server.close(() => resolve()));
  await new Promise<void>((resolve) => private2.server.listen(0, "127.0.0.2", resolve));
  private2.port = (private2.server.address() as { port: number }).port;
  deadPort = await freePort();
  const ports = [deadPort, https1.port, plain.port, h2.port, wsUpstream.port, private2.port, plainWs.port, direct.port, tokenEndpoint.port];
  [squid, authSquid] = await Promise.all([startSquid({ connectPorts: ports }), startSquid({ connectPorts: ports, users: { alice: PASSWORD } })]);
  // Accepts connections and never answers: a parent that hangs.
  silent = createNetServer((socket) => {
    silentSockets.add(socket);
    socket.on("error", () => undefined).resume();
  });
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
}, 60_000);

afterAll(async () => {
  for (const proxy of proxies) await proxy.close().catch(() => undefined);
  await Promise.all([squid?.stop(), authSquid?.stop()]);
  for (const socket of silentSockets) socket.destroy();
  silent?.close();
  await Promise.all([https1?.close(), direct?.close(), tokenEndpoint?.close(), plain?.close(), plainWs?.close(), h2?.close(), wsUpstream?.close(), private2?.close()]);
});

interface Options {
  proxy: string;
  noProxy?: string[];
  allowIps?: string[];
  resolve?: Record<string, string>;
  extra?: string;
  /** Trust the upstreams' CA (default true). */
  trust?: boolean;
}

async function portcullis(options: Options): Promise<TestProxy> {
  const resolve = options.resolve ?? { "upstream.test": "127.0.0.1" };
  const yaml = [
    "version: 1",
    "upstream:",
    `  trust: [${options.trust === false ? "" : JSON.stringify(pki.caFile)}]`,
    "  connect_timeout: 2s",
    "  response_timeout: 5s",
    `  resolve: ${JSON.stringify(resolve)}`,
    `  proxy: ${options.proxy}`,
    `  no_proxy: ${JSON.stringify(options.noProxy ?? [])}`,
    "network:",
    "  default: allow",
    `  allow_ips: ${JSON.stringify(options.allowIps ?? ["127.0.0.1/32", "::1/128"])}`,
    options.extra ?? "",
  ].join("\n");
  const proxy = await startProxy(yaml, { caDir });
  proxies.push(proxy);
  return proxy;
}

/** Closes portcullis, so its pooled tunnels through squid close and squid writes their lines. */
async function closed(proxy: TestProxy): Promise<void> {
  await proxy.close();
  proxies.splice(proxies.indexOf(proxy), 1);
}

async function get(proxy: TestProxy, url: string): Promise<{ status: number; body: string; error?: string }> {
  const res = await request(url, { dispatcher: proxy.dispatcher });
  const body = await res.body.text();
  return { status: res.statusCode, body, error: res.headers["x-portcullis-error"] as string | undefined };
}

/**
 * Lines squid has written for `match` once everything before a marker request is logged (a
 * plain GET through squid, logged at once): a line that is not there by then was never made.
 */
async function linesUpToMarker(parent: Squid, match: (line: AccessLine) => boolean): Promise<AccessLine[]> {
  const marker = `/marker-${Math.random().toString(36).slice(2)}`;
  const headers: Record<string, string> = { Host: `127.0.0.1:${plain.port}`, Connection: "close" };
  if (parent === authSquid) headers["Proxy-Authorization"] = `Basic ${Buffer.from(`alice:${PASSWORD}`).toString("base64")}`;
  await new Promise<void>((resolve, reject) =>
    http
      .request({ host: "127.0.0.1", port: parent.port, path: `http://127.0.0.1:${plain.port}${marker}`, headers }, (res) => res.resume().once("end", resolve))
      .once("error", reject)
      .end(),
  );
  await parent.waitForLine((line) => line.url.includes(marker));
  return parent.accessLog().filter(match);
}

describe("through squid without authentication", () => {
  it("reaches a TLS upstream with CONNECT to the address upstream.resolve gives, verified TLS inside, keep-alive connections reused", async () => {
    const proxy = await portcullis({ proxy: squid.url });
    const before = https1Ports.length;
    for (const path of ["/one", "/two", "/three"]) {
      const answer = await get(proxy, `https://upstream.test:${https1.port}${path}`);
      expect(answer).toMatchObject({ status: 200, body: `tls hello ${path} host=upstream.test:${https1.port}` });
    }
    // One connection carried all three: the tunnel through the parent was pooled.
    expect(new Set(https1Ports.slice(before)).size).toBe(1);
    const line = await proxy.audit.waitFor((l) => l.path === "/three");
    expect(line).toMatchObject({ status: 200, upstream_version: "1.1" });
    expect(proxy.diagnostics.lines.some((l) => l.msg === `upstream connections go through the parent proxy 127.0.0.1:${squid.port}`)).toBe(true);
    await closed(proxy);
    await squid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${https1.port}`);
    const connects = squid.accessLog().filter((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${https1.port}`);
    expect(connects).toHaveLength(1);
    expect(connects[0]!.status).toBe(200);
  });

  it("speaks h2 to an h2 upstream through the tunnel (ALPN inside CONNECT)", async () => {
    const proxy = await portcullis({ proxy: squid.url });
    const answer = await get(proxy, `https://upstream.test:${h2.port}/stream`);
    expect(answer).toMatchObject({ status: 200, body: "h2 hello /stream version=h2" });
    const line = await proxy.audit.waitFor((l) => l.path === "/stream");
    expect(line.upstream_version).toBe("2");
    // An h2 client too: its streams share the session through the parent.
    const { session } = await h2ThroughProxy(proxy.port, "upstream.test", h2.port, proxy.caPem);
    const streams = await Promise.all(["/a", "/b"].map((path) => h2Request(session, { ":path": path, ":authority": `upstream.test:${h2.port}` })));
    expect(streams.map((s) => s.body.toString())).toEqual(["h2 hello /a version=h2", "h2 hello /b version=h2"]);
    session.destroy();
    await closed(proxy);
    await squid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${h2.port}` && l.status === 200);
  });

  it("carries a WebSocket through the parent", async () => {
    const proxy = await portcullis({ proxy: squid.url });
    const ws = new WebSocket(`wss://upstream.test:${wsUpstream.port}/echo`, { agent: proxy.agent(), ca: proxy.caPem });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const echoed = new Promise<string>((resolve) => ws.once("message", (data) => resolve(data.toString())));
    ws.send("through the corporate proxy");
    expect(await echoed).toBe("through the corporate proxy");
    ws.close();
    await proxy.audit.waitFor((l) => l.msg === "websocket" && l.port === wsUpstream.port);
    await closed(proxy);
    await squid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${wsUpstream.port}`);
  });

  it("tunnels a plain ws:// WebSocket with CONNECT: an upgrade must reach the destination itself (RFC 6455 4.1)", async () => {
    const proxy = await portcullis({ proxy: squid.url });
    // A ws:// client behind an HTTP proxy sends the handshake in absolute form (ws's agent option does not, so written out here).
    const upgraded = await new Promise<string>((resolve, reject) => {
      const key = "dGhlIHNhbXBsZSBub25jZQ==";
      const req = http.request({ host: "127.0.0.1", port: proxy.port, path: `http://upstream.test:${plainWs.port}/plain-ws`, headers: { Host: `upstream.test:${plainWs.port}`, Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key } });
      req.once("upgrade", (res, socket: Socket) => {
        // One masked text frame "hi"; the echo comes back unmasked.
        const mask = Buffer.from([1, 2, 3, 4]);
        const payload = Buffer.from("hi").map((byte, i) => byte ^ mask[i % 4]!);
        socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload]));
        socket.once("data", (frame: Buffer) => {
          socket.destroy();
          resolve(`${res.statusCode} ${frame.subarray(2).toString()}`);
        });
      });
      req.once("response", (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
      req.once("error", reject);
      req.end();
    });
    expect(upgraded).toBe("101 plain echo: hi");
    await proxy.audit.waitFor((l) => l.msg === "websocket" && l.port === plainWs.port);
    await squid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${plainWs.port}` && l.status === 200);
  });

  it("verifies the destination's certificate inside the tunnel exactly as on a direct connection", async () => {
    const proxy = await portcullis({ proxy: squid.url, trust: false });
    const answer = await get(proxy, `https://upstream.test:${https1.port}/untrusted`);
    expect(answer).toMatchObject({ status: 502, error: "upstream_tls_error" });
    expect(JSON.parse(answer.body).error.message).toMatch(/^TLS with upstream\.test:\d+ failed: /);
  });

  it("sends plain http:// in absolute form to the parent, not CONNECT", async () => {
    const proxy = await portcullis({ proxy: squid.url });
    const answer = await get(proxy, `http://localhost:${plain.port}/plain?q=1`);
    expect(answer).toMatchObject({ status: 200, body: `plain hello /plain?q=1 host=localhost:${plain.port} via=none` });
    const line = await squid.waitForLine((l) => l.method === "GET" && l.url.startsWith(`http://localhost:${plain.port}/plain`));
    expect(line.status).toBe(200);
    // A second request reuses the kept-alive connection to the parent.
    expect(await get(proxy, `http://localhost:${plain.port}/plain-again`)).toMatchObject({ status: 200 });
    const again = await squid.waitForLine((l) => l.url.startsWith(`http://localhost:${plain.port}/plain-again`));
    expect(again.clientPort).toBe(line.clientPort);
    expect(squid.accessLog().some((l) => l.method === "CONNECT" && l.url.endsWith(`:${plain.port}`))).toBe(false);
  });

  it("goes direct for hosts under no_proxy: nothing in squid's log", async () => {
    const proxy = await portcullis({
      proxy: squid.url,
      noProxy: ["direct.test", "*.direct.example", "10.0.0.0/8"],
      resolve: { "direct.test": "127.0.0.1", "a.direct.example": "127.0.0.1" },
    });
    expect(await get(proxy, `https://direct.test:${direct.port}/direct-one`)).toMatchObject({ status: 200, body: `direct hello /direct-one host=direct.test:${direct.port}` });
    expect(await get(proxy, `https://a.direct.example:${direct.port}/direct-two`)).toMatchObject({ status: 200, body: `direct hello /direct-two host=a.direct.example:${direct.port}` });
    expect(await get(proxy, `http://localhost:${plain.port}/not-bypassed`)).toMatchObject({ status: 200 });
    await closed(proxy);
    // Every tunnel portcullis had is closed and a later request is logged: a bypass that went through squid would be there.
    const lines = await linesUpToMarker(squid, (l) => l.url.includes("/direct-") || l.url.endsWith(`:${direct.port}`));
    expect(lines).toEqual([]);
    expect(squid.accessLog().some((l) => l.url.includes("/not-bypassed"))).toBe(true);
  });

  it("judges the destination with the SSRF guard, never the parent's own (private) address", async () => {
    // Only 127.0.0.2 may be reached; the parent listens on 127.0.0.1 and is used all the same.
    const proxy = await portcullis({
      proxy: squid.url,
      allowIps: ["127.0.0.2/32"],
      resolve: { "allowed.test": "127.0.0.2", "private.test": "127.0.0.1" },
    });
    expect(await get(proxy, `https://allowed.test:${private2.port}/ok`)).toMatchObject({ status: 200, body: "from 127.0.0.2" });
    // Nothing listens on this port: a refusal that reached squid would show as a CONNECT line for it.
    const unused = await freePort();
    const denied = await get(proxy, `https://private.test:${unused}/ssrf`);
    expect(denied).toMatchObject({ status: 403, error: "policy_denied" });
    expect(JSON.parse(denied.body).error.message).toMatch(/private\.test resolves to 127\.0\.0\.1/);
    // An IP literal is judged at CONNECT already: refused there.
    await expect(get(proxy, `https://127.0.0.1:${unused}/ssrf-literal`)).rejects.toThrow(/403/);
    expect(await get(proxy, `http://localhost:${unused}/ssrf-plain`)).toMatchObject({ status: 403, error: "policy_denied" });
    await closed(proxy);
    await squid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.2:${private2.port}`);
    expect(await linesUpToMarker(squid, (l) => l.url.includes("ssrf") || l.url.endsWith(`:${unused}`))).toEqual([]);
  });

  it("tunnels passthrough hosts through the parent too", async () => {
    const proxy = await portcullis({ proxy: squid.url, extra: "passthrough:\n  hosts: [pass.test]\n", resolve: { "pass.test": "127.0.0.1" } });
    const socket = await openConnect(proxy.port, `pass.test:${https1.port}`);
    const tls = tlsConnect({ socket, servername: "pass.test", ca: pki.caPem });
    await new Promise((resolve, reject) => tls.once("secureConnect", resolve).once("error", reject));
    expect(tls.getPeerX509Certificate()!.issuer).toContain("parent-upstream test CA");
    tls.write("GET /passthrough HTTP/1.1\r\nHost: pass.test\r\nConnection: close\r\n\r\n");
    let body = "";
    tls.on("data", (chunk: Buffer) => (body += chunk.toString()));
    await new Promise((resolve) => tls.once("close", resolve));
    expect(body).toContain("tls hello /passthrough");
    await proxy.audit.waitFor((l) => l.msg === "tunnel" && l.host === "pass.test" && l.status === 200);
    const connects = await squid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${https1.port}` && squid.accessLog().filter((x) => x.url === l.url).length >= 2);
    expect(connects.status).toBe(200);
  });

  it("turns the parent's refusal (403 for a port its ACL denies) into 502 upstream_unreachable naming the parent", async () => {
    const proxy = await portcullis({ proxy: squid.url });
    const closedPort = await freePort();
    const answer = await get(proxy, `https://upstream.test:${closedPort}/refused`);
    expect(answer).toMatchObject({ status: 502, error: "upstream_unreachable" });
    expect(JSON.parse(answer.body).error.message).toBe(`the parent proxy 127.0.0.1:${squid.port} refused CONNECT 127.0.0.1:${closedPort}: 403 Forbidden`);
    await squid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${closedPort}` && l.status === 403);
  });
});

describe("a parent that cannot reach the destination", () => {
  it("answers 502 upstream_unreachable with the parent's own status (squid's 503)", async () => {
    const proxy = await portcullis({ proxy: squid.url });
    const answer = await get(proxy, `https://upstream.test:${deadPort}/nobody-home`);
    expect(answer).toMatchObject({ status: 502, error: "upstream_unreachable" });
    expect(JSON.parse(answer.body).error.message).toBe(`the parent proxy 127.0.0.1:${squid.port} refused CONNECT 127.0.0.1:${deadPort}: 503 Service Unavailable`);
  });
});

describe("through squid with basic authentication", () => {
  it("authenticates with the credentials in the URL, for CONNECT and for absolute form; the password is logged nowhere", async () => {
    const proxy = await portcullis({ proxy: `http://alice:${PASSWORD}@127.0.0.1:${authSquid.port}` });
    expect(await get(proxy, `https://upstream.test:${https1.port}/authed`)).toMatchObject({ status: 200 });
    expect(await get(proxy, `http://localhost:${plain.port}/authed-plain`)).toMatchObject({ status: 200, body: `plain hello /authed-plain host=localhost:${plain.port} via=none` });
    await closed(proxy);
    const connect = await authSquid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${https1.port}`);
    expect(connect).toMatchObject({ status: 200, user: "alice" });
    expect(await authSquid.waitForLine((l) => l.url.includes("/authed-plain"))).toMatchObject({ status: 200, user: "alice" });
    const everything = [...proxy.audit.raw, ...proxy.diagnostics.raw].join("");
    expect(everything).toContain(`parent proxy 127.0.0.1:${authSquid.port}`);
    expect(everything).not.toContain(PASSWORD);
    expect(everything).not.toContain(Buffer.from(`alice:${PASSWORD}`).toString("base64"));
  });

  it("takes the password from a secret source in the object form", async () => {
    process.env.PCX_TEST_SQUID_PASSWORD = PASSWORD;
    const proxy = await portcullis({ proxy: `{ url: "http://127.0.0.1:${authSquid.port}", username: alice, password: { env: PCX_TEST_SQUID_PASSWORD } }` });
    expect(await get(proxy, `https://upstream.test:${h2.port}/from-env`)).toMatchObject({ status: 200, body: "h2 hello /from-env version=h2" });
    await closed(proxy);
    expect(await authSquid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${h2.port}`)).toMatchObject({ status: 200, user: "alice" });
  });

  it("answers 502 upstream_unreachable naming the parent and its 407 when the credentials are wrong, never the password", async () => {
    const proxy = await portcullis({ proxy: `http://alice:${WRONG}@127.0.0.1:${authSquid.port}` });
    for (const url of [`https://upstream.test:${https1.port}/wrong`, `http://localhost:${plain.port}/wrong-plain`]) {
      const answer = await get(proxy, url);
      expect(answer).toMatchObject({ status: 502, error: "upstream_unreachable" });
      const message = JSON.parse(answer.body).error.message as string;
      expect(message).toContain(`parent proxy 127.0.0.1:${authSquid.port}`);
      expect(message).toMatch(/407/);
      expect(answer.body).not.toContain(WRONG);
    }
    const line = await proxy.audit.waitFor((l) => l.path === "/wrong");
    expect((line.error as { message: string }).message).toMatch(/refused CONNECT 127\.0\.0\.1:\d+: 407/);
    expect([...proxy.audit.raw, ...proxy.diagnostics.raw].join("")).not.toContain(WRONG);
  });

  it("fails closed when the parent's password cannot be read: a warning at start, 502 naming the parent, nothing sent", async () => {
    delete process.env.PCX_TEST_SQUID_MISSING;
    const proxy = await portcullis({ proxy: `{ url: "http://127.0.0.1:${authSquid.port}", username: alice, password: { env: PCX_TEST_SQUID_MISSING } }` });
    expect(proxy.diagnostics.lines.some((l) => l.level === 40 && /PCX_TEST_SQUID_MISSING is not set; requests through the parent proxy/.test(l.msg))).toBe(true);
    const answer = await get(proxy, `https://upstream.test:${https1.port}/no-password`);
    expect(answer).toMatchObject({ status: 502, error: "upstream_unreachable" });
    expect(JSON.parse(answer.body).error.message).toMatch(new RegExp(`^cannot authenticate to the parent proxy 127\\.0\\.0\\.1:${authSquid.port}: secret "upstream.proxy.password" is unavailable`));
  });

  it("answers 407 from the parent as 502 when no credentials are configured", async () => {
    const proxy = await portcullis({ proxy: authSquid.url });
    const answer = await get(proxy, `https://upstream.test:${https1.port}/anonymous`);
    expect(answer).toMatchObject({ status: 502, error: "upstream_unreachable" });
    expect(JSON.parse(answer.body).error.message).toContain("407");
  });
});

describe("a parent that is down or hangs", () => {
  it("answers 502 upstream_unreachable naming the parent when nothing listens there", async () => {
    const port = await freePort();
    const proxy = await portcullis({ proxy: `http://127.0.0.1:${port}`, extra: "passthrough:\n  hosts: [pass.test]\n", resolve: { "upstream.test": "127.0.0.1", "pass.test": "127.0.0.1" } });
    for (const url of [`https://upstream.test:${https1.port}/down`, `http://localhost:${plain.port}/down`]) {
      const answer = await get(proxy, url);
      expect(answer).toMatchObject({ status: 502, error: "upstream_unreachable" });
      expect(JSON.parse(answer.body).error.message).toMatch(new RegExp(`cannot connect to the parent proxy 127\\.0\\.0\\.1:${port} \\(for .*\\): ECONNREFUSED`));
    }
    await expect(openConnect(proxy.port, `pass.test:${https1.port}`)).rejects.toThrow(/502/);
  });

  it("applies connect_timeout to the parent hop", async () => {
    const port = (silent.address() as { port: number }).port;
    const proxy = await portcullis({ proxy: `http://127.0.0.1:${port}` });
    const started = Date.now();
    const answer = await get(proxy, `https://upstream.test:${https1.port}/hang`);
    expect(answer).toMatchObject({ status: 502, error: "upstream_unreachable" });
    expect(JSON.parse(answer.body).error.message).toBe(`connecting to upstream.test:${https1.port} through the parent proxy 127.0.0.1:${port} timed out after 2s`);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
  });
});

describe("minted secrets through the parent", () => {
  it("reaches an OAuth 2.0 token endpoint through the parent proxy, as upstream requests go", async () => {
    const proxy = await portcullis({
      proxy: `http://alice:${PASSWORD}@127.0.0.1:${authSquid.port}`,
      resolve: { "upstream.test": "127.0.0.1", "token.test": "127.0.0.1" },
      extra: [
        "secrets:",
        `  svc: { oauth2: { token_url: "https://token.test:${tokenEndpoint.port}/oauth/token", grant: client_credentials, client_id: { command: "echo cid" }, client_secret: { command: "echo csecret" } } }`,
        "credentials:",
        '  - { name: svc, hosts: [upstream.test], header: { name: Authorization, value: "Bearer ${secrets.svc}" } }',
      ].join("\n"),
    });
    const answer = await get(proxy, `https://upstream.test:${https1.port}/uses-oauth-token`);
    expect(answer.status).toBe(200);
    expect((await proxy.audit.waitFor((l) => l.path === "/uses-oauth-token")).credentials).toEqual(["svc"]);
    await closed(proxy);
    // The token endpoint was reached through squid (a CONNECT line with the parent's user), not directly.
    const line = await authSquid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${tokenEndpoint.port}` && l.user === "alice", 20_000);
    expect(line.status).toBe(200);
  }, 40_000);
});

describe("the connector other modules open connections with", () => {
  function connectorFor(allowIps: string[]): UpstreamConnector {
    const guard = new DestinationGuard("deny", allowIps);
    const resolve = { "token.test": "127.0.0.1" };
    const parent = new ParentProxy({ host: "127.0.0.1", port: authSquid.port, username: "alice", password: PASSWORD }, [], resolve, new Scrubber());
    return new UpstreamConnector(createLookup(resolve, guard), buildUpstreamTrust([pki.caFile]), { connectMs: 2000, responseMs: 5000, guard }, parent);
  }

  it("reaches a token endpoint through the parent with verified TLS, via its https.Agent", async () => {
    const connector = connectorFor(["127.0.0.1/32"]);
    const body = await new Promise<string>((resolve, reject) =>
      https
        .request(`https://token.test:${tokenEndpoint.port}/oauth/token`, { method: "POST", agent: connector.agent() }, (res) => {
          let text = "";
          res.on("data", (chunk: Buffer) => (text += chunk.toString())).once("end", () => resolve(text));
        })
        .once("error", reject)
        .end("grant_type=client_credentials"),
    );
    expect(JSON.parse(body)).toEqual({ access_token: "minted", path: "/oauth/token", host: `token.test:${tokenEndpoint.port}` });
    const tls = await connector.tls({ host: "token.test", port: tokenEndpoint.port });
    expect(tls.authorized).toBe(true);
    tls.destroy();
    connector.destroy();
    const lines = await authSquid.waitForLine((l) => l.method === "CONNECT" && l.url === `127.0.0.1:${tokenEndpoint.port}` && authSquid.accessLog().filter((x) => x.url === l.url).length >= 2);
    expect(lines).toMatchObject({ status: 200, user: "alice" });
  });

  it("refuses a private destination the guard does not allow, before asking the parent", async () => {
    const connector = connectorFor([]);
    const refused = await connector.tls({ host: "token.test", port: tokenEndpoint.port }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ProxyError);
    expect(refused).toMatchObject({ type: "policy_denied" });
  });
});

describe("the squid the tests start", () => {
  it("has a pid file of its own per instance, so test files running in parallel never share one", () => {
    expect(squid.pidFile).not.toBe(authSquid.pidFile);
    for (const instance of [squid, authSquid]) {
      expect(instance.pidFile.startsWith(instance.dir)).toBe(true);
      expect(Number(readFileSync(instance.pidFile, "utf8").trim())).toBe(instance.process.pid);
    }
  });
});
