import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import WebSocket, { WebSocketServer } from "ws";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { Readable } from "node:stream";
import { h2Request, h2ThroughProxy, readStream } from "./helpers/h2.js";
import { rawExchange } from "./helpers/tunnel.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

/** Containment without exceptions: no spelling of a placeholder, a path or a method gets past the policy. */
const PLACEHOLDER = "PCX_KEY_PLACEHOLDER_7";
const SECRET = "real-key-9f8e7d6c5b4a";
let pki: ServerPki;
let upstream: TestUpstream;
let plain: TestUpstream;
let wss: WebSocketServer;
let proxy: TestProxy;
const seen: { url: string; headers: string[]; body: string }[] = [];

beforeAll(async () => {
  process.env.PCX_CONTAIN_SECRET = SECRET;
  pki = await makeUpstreamPki();
  const handler = (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) =>
    void readStream(req).then((body) => {
      seen.push({ url: req.url ?? "", headers: req.rawHeaders, body: body.toString() });
      res.writeHead(200, { "Content-Type": "text/plain" }).end("ok");
    });
  upstream = await startUpstream(handler, pki);
  plain = await startUpstream(handler);
  wss = new WebSocketServer({ server: upstream.server });
  wss.on("connection", (ws) => ws.on("message", (data) => ws.send(data)));
  const names = ["keys.test", "elsewhere.test", "files.test", "plain.test", "plain-ok.test"];
  proxy = await startProxy(`
version: 1
upstream:
  trust: [${JSON.stringify(pki.caFile)}]
  resolve: { ${names.map((name) => `${name}: 127.0.0.1`).join(", ")} }
secrets:
  key: { env: PCX_CONTAIN_SECRET }
network:
  default: deny
  allow_ips: [127.0.0.1/32]
  rules:
    - { name: no-secret, action: deny, hosts: [files.test], ports: [${upstream.port}], paths: ["/public/secret/**"] }
    - { name: public, action: allow, hosts: [files.test], ports: [${upstream.port}], paths: ["/public/**"] }
    - { name: read-only, action: allow, hosts: [files.test], ports: [${upstream.port}], methods: [GET], paths: ["/ro/**"] }
    - { name: others, action: allow, hosts: [keys.test, elsewhere.test, plain.test, plain-ok.test], ports: [${upstream.port}, ${plain.port}] }
credentials:
  - { name: plain-default, hosts: [plain.test], header: { name: X-Key, value: "\${secrets.key}" } }
  - { name: plain-allowed, hosts: [plain-ok.test], header: { name: X-Key, value: "\${secrets.key}" }, schemes: [http, https] }
placeholders:
  - { name: key, placeholder: ${PLACEHOLDER}, secret: key, hosts: [keys.test], in: [header, query, path, body] }
`);
});

afterAll(async () => {
  await proxy?.close();
  for (const client of wss?.clients ?? []) client.terminate();
  await new Promise<void>((resolve) => (wss ? wss.close(() => resolve()) : resolve()));
  await upstream?.close();
  await plain?.close();
});

const at = (host: string, path: string) => `https://${host}:${upstream.port}${path}`;
/** Some bytes of the placeholder percent-encoded, in mixed hex case. */
const partlyEncoded = PLACEHOLDER.replace("P", "%50").replace("K", "%4b").replace("_", "%5F");

describe("placeholders, however they are spelled", () => {
  it.each([
    ["a header, partly percent-encoded", { headers: { "X-Api-Key": partlyEncoded } }, "/h"],
    ["the query, partly percent-encoded", {}, `/q?key=${partlyEncoded}`],
    ["the query, encoded twice", {}, `/q?key=%2550CX_KEY_PLACEHOLDER_7`],
    ["the path, partly percent-encoded", {}, `/p/${partlyEncoded}`],
    ["a form body, + for nothing and %-escapes", { method: "POST", body: `key=${partlyEncoded}`, headers: { "content-type": "application/x-www-form-urlencoded" } }, "/b"],
    ["a JSON body, \\u escapes", { method: "POST", body: `{"key":"\\u0050CX_KEY_PLACEHOLDER_7"}`, headers: { "content-type": "application/json" } }, "/j"],
    ["a binary body", { method: "POST", body: Buffer.from(`\x00\x01${PLACEHOLDER}\xff`, "latin1"), headers: { "content-type": "application/octet-stream" } }, "/o"],
  ] as const)("is refused in %s on its way to another host", async (_where, options, path) => {
    const before = seen.length;
    const answer = await request(at("elsewhere.test", path), { dispatcher: proxy.dispatcher, ...(options as object) });
    expect(answer.statusCode).toBe(403);
    expect(((await answer.body.json()) as { error: { rule: string } }).error.rule).toBe("key");
    expect(seen.length).toBe(before);
  });

  it("is refused at the start of a body with no length (chunked, or h2 without content-length), however long it is", async () => {
    const before = seen.length;
    const chunked = await request(at("elsewhere.test", "/chunked"), {
      dispatcher: proxy.dispatcher,
      method: "POST",
      body: Readable.from([Buffer.from(`key=${partlyEncoded}&`), Buffer.alloc(200 * 1024, 120)]),
    });
    expect(chunked.statusCode).toBe(403);
    await chunked.body.text();
    const { session } = await h2ThroughProxy(proxy.port, "elsewhere.test", upstream.port, proxy.caPem);
    const h2 = await h2Request(session, { ":method": "POST", ":path": "/h2-no-length" }, `{"key":"${PLACEHOLDER}"}`);
    expect(h2.status).toBe(403);
    expect(seen.length).toBe(before);
    // To its own host it is swapped, and a long body streams on after the part that was read.
    const { session: keys } = await h2ThroughProxy(proxy.port, "keys.test", upstream.port, proxy.caPem);
    const long = Buffer.concat([Buffer.from(`${PLACEHOLDER}:`), Buffer.alloc(300 * 1024, 121)]);
    expect((await h2Request(keys, { ":method": "POST", ":path": "/h2-long" }, long)).status).toBe(200);
    const last = seen.at(-1)!;
    expect(last.body.startsWith(`${SECRET}:`)).toBe(true);
    expect(last.body.length).toBe(long.length - PLACEHOLDER.length + SECRET.length);
    session.close();
    keys.close();
  });

  it("is swapped for the real value in any spelling where it may go", async () => {
    const answer = await request(at("keys.test", `/q?key=${partlyEncoded}`), { dispatcher: proxy.dispatcher, headers: { "X-Api-Key": partlyEncoded } });
    expect(answer.statusCode).toBe(200);
    await answer.body.text();
    const last = seen.at(-1)!;
    expect(last.url).toBe(`/q?key=${SECRET}`);
    expect(last.headers).toContain(SECRET);
  });

  it("is refused in a WebSocket message to another host, however spelled", async () => {
    const ws = new WebSocket(`wss://elsewhere.test:${upstream.port}/ws`, { agent: proxy.agent(), ca: proxy.caPem });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
    ws.send(`{"k":"${partlyEncoded}"}`);
    expect(await closed).toBe(1008);
  });
});

describe("schemes", () => {
  it("never puts a credential on a cleartext request unless it lists http", async () => {
    const before = seen.length;
    await (await request(`http://plain.test:${plain.port}/no-secret`, { dispatcher: proxy.dispatcher })).body.text();
    expect(seen.at(-1)!.headers.map((h) => h.toLowerCase())).not.toContain("x-key");
    await (await request(`http://plain-ok.test:${plain.port}/with-secret`, { dispatcher: proxy.dispatcher })).body.text();
    expect(seen.at(-1)!.headers).toContain(SECRET);
    expect(seen.length).toBe(before + 2);
  });
});

describe("paths and methods, every reading", () => {
  it.each([
    ["/public/secret/x", 403],
    ["/public/%2573ecret/x", 403],
    ["/public/%EF%BD%93ecret/x", 403],
    ["/public/%EF%BC%8E%EF%BC%8E/public/secret/x", 403],
    ["/public/secret%00/x", 403],
    ["/public/secret./x", 403],
    ["/public/secret%20/x", 403],
    ["/public/%c0%ae%c0%ae/secret/x", 400],
    ["/public/%ff/x", 400],
    ["/public/ok/x", 200],
  ])("%s is answered %i", async (path, status) => {
    const answer = await request(at("files.test", path), { dispatcher: proxy.dispatcher });
    expect(answer.statusCode).toBe(status);
    await answer.body.text();
  });

  it("judges a method-override header as the method it claims", async () => {
    expect((await request(at("files.test", "/ro/x"), { dispatcher: proxy.dispatcher })).statusCode).toBe(200);
    for (const name of ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]) {
      const answer = await request(at("files.test", "/ro/x"), { dispatcher: proxy.dispatcher, headers: { [name]: "DELETE" } });
      expect(answer.statusCode).toBe(403);
      await answer.body.text();
    }
  });
});

describe("oversized requests", () => {
  it("answers a URL that is too long with 414 and a head that is too large with 431, as JSON", async () => {
    const long = await request(at("files.test", `/public/${"a".repeat(9000)}`), { dispatcher: proxy.dispatcher });
    expect(long.statusCode).toBe(414);
    expect(((await long.body.json()) as { error: { type: string } }).error.type).toBe("bad_request");
    const reply = await rawExchange(proxy.port, "files.test", upstream.port, proxy.caPem, `GET /public/x HTTP/1.1\r\nHost: files.test:${upstream.port}\r\nX-Big: ${"b".repeat(20_000)}\r\n\r\n`);
    expect(reply).toMatch(/^HTTP\/1\.1 431 /);
    expect(reply).toContain('"type":"bad_request"');
    // The listener itself too.
    const direct = await new Promise<string>((resolve) => {
      const socket = connect(proxy.port, "127.0.0.1", () => socket.write(`GET http://files.test/${"c".repeat(20_000)} HTTP/1.1\r\nHost: files.test\r\n\r\n`));
      let data = "";
      socket.on("data", (chunk: Buffer) => (data += chunk.toString()));
      socket.once("close", () => resolve(data));
    });
    expect(direct).toMatch(/^HTTP\/1\.1 414 /);
  });
});
