import { randomBytes } from "node:crypto";
import { gzipSync } from "node:zlib";
import http, { type IncomingMessage } from "node:http";
import { connect } from "node:net";
import https from "node:https";
import { HttpsProxyAgent } from "https-proxy-agent";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { ProxyAgent, request } from "undici";
import { createProxy } from "../src/proxy/create-proxy.js";
import { parsePolicy } from "../src/policy/load.js";
import { explain } from "../src/proxy/explain.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { openConnect } from "./helpers/tunnel.js";
import { startWsUpstream, type TestWsUpstream } from "./helpers/upstream.js";
import { CLI, assertBuilt } from "./helpers/cli.js";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const secret = (label: string) => `${label}-${randomBytes(12).toString("hex")}`;
const SECRETS = {
  PCX_E2E_GITHUB: secret("ghp"),
  PCX_E2E_EXECD: secret("execd"),
  PCX_E2E_TERMINALS: secret("term"),
  PCX_E2E_OPENAI: secret("sk"),
  PCX_E2E_CRLF: `crlf-${randomBytes(6).toString("hex")}\r\nX-Smuggled: yes`,
  PCX_E2E_SPECIAL: `sp3c+/ial=tok en/${randomBytes(6).toString("hex")}`,
  PCX_E2E_T1: secret("proxy-token-1"),
  PCX_E2E_T2: secret("proxy-token-2"),
};
const PLACEHOLDER = "PCX_OPENAI_KEY_PLACEHOLDER";
const NAMES = ["api.test", "execd.test", "terminals.test", "openai.test", "other.test", "missing.test", "crlf.test", "local-name.test", "special.test"];

let pki: ServerPki;
let upstream: TestWsUpstream;
let proxy: TestProxy;
let ssrf: TestProxy;
let agent1: ProxyAgent;
let agent2: ProxyAgent;

function policyYaml(caFile: string, extraRules = ""): string {
  const ports = `ports: [${upstream.port}]`;
  return `
version: 1
upstream:
  trust: [${JSON.stringify(caFile)}]
  resolve: { ${NAMES.map((name) => `${name}: 127.0.0.1`).join(", ")} }
secrets:
  github: { env: PCX_E2E_GITHUB }
  execd: { env: PCX_E2E_EXECD }
  terminals: { env: PCX_E2E_TERMINALS }
  openai: { env: PCX_E2E_OPENAI }
  missing: { env: PCX_E2E_NEVER_SET }
  crlf: { env: PCX_E2E_CRLF }
  special: { env: PCX_E2E_SPECIAL }
clients:
  - { name: agent-1, token: { env: PCX_E2E_T1 } }
  - { name: agent-2, token: { env: PCX_E2E_T2 } }
network:
  default: deny
  allow_ips: [127.0.0.1/32]
  rules:
${extraRules}    - { name: no-private, action: deny, hosts: [other.test], ${ports}, paths: ["/private/**"] }
    - { name: api-read, action: allow, hosts: [api.test], ${ports}, methods: [GET] }
    - { name: api-write-agent-2, action: allow, hosts: [api.test], ${ports}, methods: [POST], clients: [agent-2] }
    - { name: services, action: allow, hosts: [execd.test, terminals.test, openai.test, other.test, missing.test, crlf.test, special.test], ${ports} }
credentials:
  - { name: github, hosts: [api.test], header: { name: Authorization, value: "Bearer \${secrets.github}" } }
  - { name: execd, hosts: [execd.test], header: { name: X-EXECD-ACCESS-TOKEN, value: "\${secrets.execd}" } }
  - { name: terminals, hosts: [terminals.test], query: { name: token, value: "\${secrets.terminals}" } }
  - { name: needs-missing, hosts: [missing.test], header: { name: X-Key, value: "\${secrets.missing}" } }
  - { name: crlf, hosts: [crlf.test], header: { name: X-Key, value: "\${secrets.crlf}" } }
  - { name: special-query, hosts: [special.test], query: { name: key, value: "\${secrets.special}" } }
  - { name: special-header, hosts: [special.test], header: { name: X-Special, value: "\${secrets.special}" } }
placeholders:
  - { name: openai, placeholder: ${PLACEHOLDER}, secret: openai, hosts: [openai.test], in: [header, query, path, body] }
`;
}

const basic = (name: string, token: string) => `Basic ${Buffer.from(`${name}:${token}`).toString("base64")}`;

/** What the upstream's /notes keeps (as an API that stores what it is sent would). */
let storedNote = "";

beforeAll(async () => {
  Object.assign(process.env, SECRETS);
  pki = await makeUpstreamPki();
  upstream = await startWsUpstream(pki, {}, false);
  upstream.server.removeAllListeners("request");
  upstream.server.on("request", (req: IncomingMessage, res: http.ServerResponse) => {
    upstream.seen.push({ method: req.method ?? "", url: req.url ?? "", rawHeaders: req.rawHeaders });
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const special = String(req.headers["x-special"] ?? "");
      if (req.url?.startsWith("/echo-bin")) {
        res.writeHead(200, { "Content-Type": "application/octet-stream" }).end(Buffer.from(`bin:${special}`));
        return;
      }
      if (req.url?.startsWith("/echo-b64")) {
        res.writeHead(200, { "Content-Type": "text/plain" }).end(Buffer.from(special).toString("base64"));
        return;
      }
      if (req.url?.startsWith("/echo-gzip-lines")) {
        // Two Content-Encoding lines: identity, then gzip (RFC 9110 8.4: the codings, in order).
        res.setHeader("Content-Encoding", ["identity", "gzip"]);
        res.writeHead(200, { "Content-Type": "text/plain" }).end(gzipSync(`gz:${special}`));
        return;
      }
      if (req.url?.startsWith("/echo-gzip-twice")) {
        res.setHeader("Content-Encoding", ["gzip", "gzip"]);
        res.writeHead(200, { "Content-Type": "text/plain" }).end(gzipSync(gzipSync(`gz:${special}`)));
        return;
      }
      if (req.url?.startsWith("/echo-zstd")) {
        res.writeHead(200, { "Content-Type": "text/plain", "Content-Encoding": "zstd" }).end(special);
        return;
      }
      if (req.url?.startsWith("/echo-trailer")) {
        res.writeHead(200, { "Content-Type": "text/plain", Trailer: "X-Echo" });
        res.write("body");
        res.addTrailers({ "X-Echo": special });
        res.end();
        return;
      }
      if (req.url?.startsWith("/echo-reason")) {
        res.writeHead(401, `bad key ${special}`, { "Content-Type": "text/plain" }).end("no");
        return;
      }
      if (req.url === "/notes" && req.method === "POST") {
        storedNote = Buffer.concat(chunks).toString();
        res.writeHead(201, { "Content-Type": "text/plain" }).end("stored");
        return;
      }
      if (req.url === "/notes") {
        res.writeHead(200, { "Content-Type": "application/json" }).end(storedNote);
        return;
      }
      if (req.url === "/notes-in-reason") {
        res.writeHead(200, `note ${String((JSON.parse(storedNote || "{}") as { note?: string }).note)}`, { "Content-Type": "text/plain" }).end("ok");
        return;
      }
      if (req.url === "/echo-auth") {
        const auth = String(req.headers.authorization);
        res.writeHead(200, { "Content-Type": "text/plain", "X-Seen-Auth": auth });
        // The echoed token is split across two writes.
        res.write(`you sent ${auth.slice(0, 12)}`);
        setImmediate(() => res.end(`${auth.slice(12)} to us`));
        return;
      }
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ method: req.method, url: req.url, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString(), length: req.headers["content-length"] }));
    });
  });
  upstream.wss.on("connection", (ws, req) => ws.send(JSON.stringify({ url: req.url, rawHeaders: req.rawHeaders })));
  proxy = await startProxy(policyYaml(pki.caFile));
  agent1 = new ProxyAgent({ uri: proxy.url, token: basic("agent-1", SECRETS.PCX_E2E_T1), requestTls: { ca: proxy.caPem } });
  agent2 = new ProxyAgent({ uri: proxy.url, token: `Bearer ${SECRETS.PCX_E2E_T2}`, requestTls: { ca: proxy.caPem } });
  ssrf = await startProxy(`version: 1\nupstream:\n  trust: [${JSON.stringify(pki.caFile)}]\n  resolve: { local-name.test: 127.0.0.1 }\nnetwork:\n  default: allow\n`);
});

afterAll(async () => {
  await agent1?.close();
  await agent2?.close();
  await proxy?.close();
  await ssrf?.close();
  await upstream?.close();
});

const url = (host: string, path: string) => `https://${host}:${upstream.port}${path}`;
function headerValues(raw: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name.toLowerCase()) out.push(raw[i + 1]!);
  return out;
}
function seenBy(path: string): { rawHeaders: string[]; url: string } {
  const found = upstream.seen.find((seen) => seen.url === path);
  if (!found) throw new Error(`the upstream never saw ${path}; it saw ${upstream.seen.map((s) => s.url).join(", ")}`);
  return found;
}

describe("proxy authentication", () => {
  it("answers 407 with Proxy-Authenticate to a CONNECT without or with wrong credentials, and logs it", async () => {
    for (const extra of ["", `Proxy-Authorization: ${basic("agent-1", "wrong")}\r\n`, `Proxy-Authorization: Bearer nope\r\n`]) {
      const error = (await openConnect(proxy.port, `api.test:${upstream.port}`, extra).catch((e: unknown) => e)) as { response: string };
      expect(error.response).toMatch(/^HTTP\/1\.1 407 /);
      expect(error.response).toContain('Proxy-Authenticate: Basic realm="portcullis"');
      expect(error.response).toContain("X-Portcullis-Error: proxy_auth_required");
    }
    const line = await proxy.audit.waitFor((l) => l.status === 407 && l.msg === "denied");
    expect(line).toMatchObject({ decision: "deny", method: "CONNECT", host: "api.test", client: null, level: 40 });
    // A token sent without a scheme is never quoted back into the log.
    await openConnect(proxy.port, `api.test:${upstream.port}`, `Proxy-Authorization: ${SECRETS.PCX_E2E_T2}\r\n`).catch(() => undefined);
    await proxy.audit.waitFor((l) => l.status === 407 && String(l.reason).includes("unsupported Proxy-Authorization scheme"));
    expect(proxy.audit.raw.join("")).not.toContain(SECRETS.PCX_E2E_T2);
  });

  it("answers 407 to an absolute-form request without credentials", async () => {
    const status = await new Promise<number>((resolve, reject) => {
      http.get({ host: "127.0.0.1", port: proxy.port, path: `http://api.test:${upstream.port}/x` }, (r) => (r.resume(), resolve(r.statusCode!))).on("error", reject);
    });
    expect(status).toBe(407);
    const line = await proxy.audit.waitFor((l) => l.status === 407 && l.method === "GET");
    expect(line).toMatchObject({ host: "api.test", port: upstream.port, scheme: "http" });
  });

  it("never forwards Proxy-Authorization: not from an absolute-form request, not from inside a tunnel", async () => {
    const before = upstream.seen.length;
    const status = await new Promise<number>((resolve, reject) => {
      http
        .get({ host: "127.0.0.1", port: proxy.port, path: `https://api.test:${upstream.port}/abs-auth`, headers: { "Proxy-Authorization": basic("agent-1", SECRETS.PCX_E2E_T1) } }, (r) => (r.resume(), resolve(r.statusCode!)))
        .on("error", reject);
    });
    expect(status).toBe(200);
    expect(upstream.seen.length).toBe(before + 1);
    expect(headerValues(seenBy("/abs-auth").rawHeaders, "proxy-authorization")).toEqual([]);
    await new Promise<void>((resolve, reject) => {
      https
        .get(url("api.test", "/inner-auth"), {
          agent: new HttpsProxyAgent(`http://agent-1:${SECRETS.PCX_E2E_T1}@127.0.0.1:${proxy.port}`),
          ca: proxy.caPem,
          headers: { "Proxy-Authorization": "Basic c29tZW9uZTpzZWNyZXQ=" },
        }, (r) => (r.resume(), r.on("end", () => resolve())))
        .on("error", reject);
    });
    expect(headerValues(seenBy("/inner-auth").rawHeaders, "proxy-authorization")).toEqual([]);
  });

  it("accepts Basic name:token and Bearer token, carries the identity into every audit line, never forwards Proxy-Authorization", async () => {
    const one = await request(url("api.test", "/who?c=1"), { dispatcher: agent1 });
    const echoed = (await one.body.json()) as { rawHeaders: string[] };
    expect(one.statusCode).toBe(200);
    expect(headerValues(echoed.rawHeaders, "proxy-authorization")).toEqual([]);
    const two = await request(url("api.test", "/who?c=2"), { dispatcher: agent2 });
    await two.body.text();
    expect((await proxy.audit.waitFor((l) => l.path === "/who?c=1")).client).toBe("agent-1");
    expect((await proxy.audit.waitFor((l) => l.path === "/who?c=2")).client).toBe("agent-2");
  });
});

describe("network rules", () => {
  it("applies per-client rules: agent-2 may POST, agent-1 gets a 403 it can read, inside the tunnel", async () => {
    const denied = await request(url("api.test", "/repos"), { method: "POST", body: "{}", dispatcher: agent1, headers: { "x-request-id": "deny-1" } });
    expect(denied.statusCode).toBe(403);
    expect(denied.headers["x-portcullis-error"]).toBe("policy_denied");
    const body = (await denied.body.json()) as { error: { type: string; message: string; rule: string | null; request_id: string } };
    expect(body.error).toMatchObject({ type: "policy_denied", rule: null, request_id: "deny-1" });
    expect(body.error.message).toMatch(/no rule matches POST api\.test:\d+ for client agent-1\/repos; network\.default is deny/);
    const line = await proxy.audit.waitFor((l) => l.req_id === "deny-1");
    expect(line).toMatchObject({ msg: "denied", decision: "deny", status: 403, client: "agent-1", level: 40, error: { type: "policy_denied" } });
    expect(line.reason).toBe(body.error.message);

    const allowed = await request(url("api.test", "/repos"), { method: "POST", body: "{}", dispatcher: agent2 });
    expect(allowed.statusCode).toBe(200);
    await allowed.body.text();
  });

  it("cannot be dodged with dot segments or encoded dots", async () => {
    for (const path of ["/public/../private/keys", "/public/%2e%2e/private/keys", "//private//keys"]) {
      const res = await request(url("other.test", path), { dispatcher: agent1 });
      expect(res.statusCode).toBe(403);
      expect(((await res.body.json()) as { error: { rule: string } }).error.rule).toBe("no-private");
    }
    expect(upstream.seen.some((seen) => seen.url.includes("private"))).toBe(false);
  });

  it("refuses a host spelt so that the resolver would read another name or address than the rules judged: 400", async () => {
    const auth = `Proxy-Authorization: ${basic("agent-2", SECRETS.PCX_E2E_T2)}\r\n`;
    // An empty label (the resolver and upstream.resolve read "api.test.." as api.test), and IPv4 in the
    // forms getaddrinfo dials but no IP rule matches as text (2130706433 is 127.0.0.1).
    for (const host of ["api.test..", ".api.test", "api..test", ".", "2130706433", "127.1", "0x7f.0.0.1", "127.000.000.001"]) {
      const error = (await openConnect(proxy.port, `${host}:${upstream.port}`, auth).catch((e: unknown) => e)) as { response?: string };
      expect(error.response, host).toMatch(/^HTTP\/1\.1 400 /);
      const plain = await new Promise<string>((resolve, reject) => {
        const socket = connect(proxy.port, "127.0.0.1", () => socket.write(`GET http://${host}:${upstream.port}/plain HTTP/1.1\r\nHost: ${host}:${upstream.port}\r\n${auth}Connection: close\r\n\r\n`));
        let text = "";
        socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")));
        socket.once("end", () => resolve(text)).once("error", reject);
      });
      expect(plain, host).toMatch(/^HTTP\/1\.1 400 /);
    }
    expect(upstream.seen.some((seen) => seen.url === "/plain")).toBe(false);
    // The one trailing dot DNS allows is still the same name.
    const tunnel = await openConnect(proxy.port, `api.test.:${upstream.port}`, auth);
    tunnel.destroy();
  });

  it("refuses a CONNECT to a host no rule can allow with 403 on the CONNECT itself", async () => {
    const error = (await openConnect(proxy.port, `nowhere.test:443`, `Proxy-Authorization: ${basic("agent-1", SECRETS.PCX_E2E_T1)}\r\n`).catch((e: unknown) => e)) as { response: string };
    expect(error.response).toMatch(/^HTTP\/1\.1 403 /);
    expect(error.response).toContain('"type":"policy_denied"');
    const line = await proxy.audit.waitFor((l) => l.msg === "denied" && l.host === "nowhere.test");
    expect(line).toMatchObject({ method: "CONNECT", status: 403, client: "agent-1" });
  });

  it("a denied WebSocket handshake gets a 403 and an audit line, never silence", async () => {
    const denied = new WebSocket(`wss://other.test:${upstream.port}/private/ws`, {
      agent: new HttpsProxyAgent(`http://agent-1:${SECRETS.PCX_E2E_T1}@127.0.0.1:${proxy.port}`),
      ca: proxy.caPem,
      headers: { "x-request-id": "ws-denied-2" },
    });
    const res = await new Promise<IncomingMessage>((resolve) => denied.once("unexpected-response", (_req, r) => resolve(r)));
    expect(res.statusCode).toBe(403);
    expect(res.headers["x-portcullis-error"]).toBe("policy_denied");
    const line = await proxy.audit.waitFor((l) => l.req_id === "ws-denied-2");
    expect(line).toMatchObject({ msg: "denied", rule: "no-private", status: 403 });
  });
});

describe("destination guard (SSRF)", () => {
  const tryConnect = (authority: string) => openConnect(ssrf.port, authority).then(() => "200", (e: { response?: string }) => e.response ?? String(e));

  it("refuses CONNECT to loopback IP literals, IPv4-mapped IPv6 included, before dialling", async () => {
    expect(await tryConnect(`127.0.0.1:${upstream.port}`)).toMatch(/^HTTP\/1\.1 403[\s\S]*private address \(loopback\)/);
    expect(await tryConnect(`[::ffff:127.0.0.1]:${upstream.port}`)).toMatch(/^HTTP\/1\.1 403[\s\S]*network\.private_destinations/);
    expect(upstream.seen).not.toContainEqual(expect.objectContaining({ url: "/ssrf" }));
  });

  it("refuses its own listener even where allow_ips admits loopback", async () => {
    const error = (await openConnect(proxy.port, `127.0.0.1:${proxy.port}`, `Proxy-Authorization: ${basic("agent-1", SECRETS.PCX_E2E_T1)}\r\n`).catch((e: unknown) => e)) as { response: string };
    expect(error.response).toMatch(/^HTTP\/1\.1 403 [\s\S]*own listener/);
  });

  it("refuses a name that resolves to its own listener, found on the address it dials", async () => {
    const loop = await startProxy(`version: 1\nupstream:\n  resolve: { loop.test: 127.0.0.1 }\nnetwork:\n  default: allow\n  allow_ips: [127.0.0.1/32]\n`);
    try {
      const res = await new Promise<number>((resolve, reject) => {
        http.get({ host: "127.0.0.1", port: loop.port, path: `http://loop.test:${loop.port}/again` }, (r) => (r.resume(), resolve(r.statusCode!))).on("error", reject);
      });
      expect(res).toBe(403);
      await loop.audit.waitFor((l) => l.msg === "denied" && String(l.reason).includes("own listener"));
    } finally {
      await loop.close();
    }
  });

  it("checks the address a name resolves to (here via upstream.resolve) when dialling, and answers 403 inside the tunnel", async () => {
    const before = upstream.seen.length;
    const dispatcher = new ProxyAgent({ uri: ssrf.url, requestTls: { ca: ssrf.caPem } });
    const res = await request(url("local-name.test", "/ssrf"), { dispatcher });
    expect(res.statusCode).toBe(403);
    const body = (await res.body.json()) as { error: { message: string; rule: string } };
    expect(body.error.rule).toBe("network.private_destinations");
    expect(body.error.message).toMatch(/local-name\.test resolves to 127\.0\.0\.1/);
    expect(upstream.seen.length).toBe(before);
    await ssrf.audit.waitFor((l) => l.msg === "denied" && l.host === "local-name.test");
    await dispatcher.close();
  });
});

describe("credential injection", () => {
  it("replaces the client's own Authorization with the real one; the audit line names it and redacts it", async () => {
    const res = await request(url("api.test", "/echo?cred=1"), { dispatcher: agent1, headers: { authorization: "Bearer agent-fake-token" } });
    const echoed = (await res.body.json()) as { rawHeaders: string[] };
    // The upstream saw the real token; its echo of it back to the sandbox is scrubbed.
    expect(headerValues(seenBy("/echo?cred=1").rawHeaders, "authorization")).toEqual([`Bearer ${SECRETS.PCX_E2E_GITHUB}`]);
    expect(headerValues(echoed.rawHeaders, "authorization")).toEqual(["Bearer [REDACTED]"]);
    const line = await proxy.audit.waitFor((l) => l.path === "/echo?cred=1");
    expect(line.credentials).toEqual(["github"]);
    expect((line.req_headers as Record<string, string>).authorization).toBe("[REDACTED]");
  });

  it("sets a query credential, replacing the agent's value, and logs the URL as the client sent it", async () => {
    const res = await request(url("terminals.test", "/api/terminals?token=fake&x=1"), { dispatcher: agent1 });
    await res.body.text();
    expect(upstream.seen.map((seen) => seen.url)).toContain(`/api/terminals?x=1&token=${SECRETS.PCX_E2E_TERMINALS}`);
    const line = await proxy.audit.waitFor((l) => String(l.path).startsWith("/api/terminals"));
    expect(line.path).toBe("/api/terminals?token=fake&x=1");
    expect(line.credentials).toEqual(["terminals"]);
  });

  it.each([
    ["execd.test", "/pty/1/ws", (msg: { rawHeaders: string[] }) => expect(headerValues(msg.rawHeaders, "x-execd-access-token")).toEqual([SECRETS.PCX_E2E_EXECD])],
    ["terminals.test", "/ws/1?since=0", (msg: { url: string }) => expect(msg.url).toBe(`/ws/1?since=0&token=${SECRETS.PCX_E2E_TERMINALS}`)],
    ["api.test", "/stream", (msg: { rawHeaders: string[] }) => expect(headerValues(msg.rawHeaders, "authorization")).toEqual([`Bearer ${SECRETS.PCX_E2E_GITHUB}`])],
  ] as const)("injects credentials on the WebSocket handshake to %s", async (host, path, check) => {
    const ws = new WebSocket(`wss://${host}:${upstream.port}${path}`, {
      agent: new HttpsProxyAgent(`http://agent-1:${SECRETS.PCX_E2E_T1}@127.0.0.1:${proxy.port}`),
      ca: proxy.caPem,
      headers: { "X-EXECD-ACCESS-TOKEN": "agent-held-fake" },
    });
    const message = await new Promise<Buffer>((resolve, reject) => ws.once("message", (data) => resolve(data as Buffer)).once("error", reject));
    // The upstream got the real credential on its handshake ...
    (check as (m: unknown) => void)(upstream.seen.filter((seen) => seen.url.startsWith(path.split("?")[0]!)).at(-1));
    // ... and echoing it back in a message shows the agent [REDACTED] (SPEC section 8).
    for (const value of Object.values(SECRETS)) expect(message.toString()).not.toContain(value);
    expect(message.toString()).toContain("[REDACTED]");
    ws.close();
    const line = await proxy.audit.waitFor((l) => l.msg === "websocket" && l.host === host);
    expect((line.credentials as string[]).length).toBe(1);
    expect((line.ws as { messages: Record<string, number> }).messages).toMatchObject({ upstream: 1, scrubbed: 1 });
  });

  it("never forwards a request whose secret cannot be resolved: 502 credential_unavailable", async () => {
    const before = upstream.seen.length;
    const res = await request(url("missing.test", "/needs-secret"), { dispatcher: agent1 });
    expect(res.statusCode).toBe(502);
    const body = (await res.body.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe("credential_unavailable");
    expect(body.error.message).toContain("PCX_E2E_NEVER_SET is not set");
    for (const value of Object.values(SECRETS)) expect(JSON.stringify(body)).not.toContain(value);
    expect(upstream.seen.length).toBe(before);
  });

  it("refuses to write a secret with CRLF into a header", async () => {
    const before = upstream.seen.length;
    const res = await request(url("crlf.test", "/x"), { dispatcher: agent1 });
    expect(res.statusCode).toBe(502);
    const body = (await res.body.json()) as { error: { type: string; message: string } };
    expect(body.error).toMatchObject({ type: "credential_unavailable" });
    expect(body.error.message).toMatch(/line break or NUL/);
    expect(JSON.stringify(body)).not.toContain(SECRETS.PCX_E2E_CRLF.split("\r\n")[0]);
    expect(upstream.seen.length).toBe(before);
  });

  it("scrubs a secret the upstream echoes back, in headers and in a body split across writes", async () => {
    const res = await request(url("api.test", "/echo-auth"), { dispatcher: agent1 });
    const text = await res.body.text();
    expect(res.headers["x-seen-auth"]).toBe("Bearer [REDACTED]");
    expect(text).toBe("you sent Bearer [REDACTED] to us");
    expect(text).not.toContain(SECRETS.PCX_E2E_GITHUB);
  });
});

describe("echoed secrets in every spelling", () => {
  const forms = (value: string) => [
    value,
    encodeURIComponent(value),
    encodeURIComponent(value).replace(/%[0-9A-F]{2}/g, (e) => e.toLowerCase()),
    Buffer.from(value).toString("base64"),
  ];

  it.each(["/echo?x=1", "/echo-bin", "/echo-b64", "/echo-trailer", "/echo-reason"])("%s: nothing the sandbox receives contains the secret", async (path) => {
    const seen: string[] = [];
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = https.request(url("special.test", path), { agent: new HttpsProxyAgent(`http://agent-1:${SECRETS.PCX_E2E_T1}@127.0.0.1:${proxy.port}`), ca: proxy.caPem }, resolve);
      req.on("error", reject).end();
    });
    let body = "";
    for await (const chunk of res) body += Buffer.from(chunk as Buffer).toString("latin1");
    seen.push(body, res.statusMessage ?? "", JSON.stringify(res.rawHeaders), JSON.stringify(res.rawTrailers));
    const everything = seen.join("\n");
    // The upstream did get the real value.
    expect(headerValues(upstream.seen.at(-1)!.rawHeaders, "x-special")).toEqual([SECRETS.PCX_E2E_SPECIAL]);
    for (const form of forms(SECRETS.PCX_E2E_SPECIAL)) expect(everything).not.toContain(form);
  });

  it("reads every Content-Encoding line: identity then gzip is decoded and scrubbed, gzip twice is refused", async () => {
    const res = await request(url("special.test", "/echo-gzip-lines"), { dispatcher: agent1, headers: { "accept-encoding": "gzip" } });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-encoding"]).toBeUndefined();
    const text = await res.body.text();
    expect(text).toBe("gz:[REDACTED]");
    const twice = await request(url("special.test", "/echo-gzip-twice"), { dispatcher: agent1, headers: { "accept-encoding": "gzip" } });
    expect(twice.statusCode).toBe(502);
    const refused = await twice.body.text();
    expect(refused).toContain("upstream_protocol_error");
    expect(refused).not.toContain(SECRETS.PCX_E2E_SPECIAL);
  });

  it("refuses a body in an encoding it cannot decode when it may echo a secret", async () => {
    const res = await request(url("special.test", "/echo-zstd"), { dispatcher: agent1, headers: { "accept-encoding": "zstd, gzip" } });
    expect(res.statusCode).toBe(502);
    const text = await res.body.text();
    expect(text).toContain("upstream_protocol_error");
    expect(text).not.toContain(SECRETS.PCX_E2E_SPECIAL);
    // The upstream was only offered codings portcullis can decode.
    expect(headerValues(upstream.seen.at(-1)!.rawHeaders, "accept-encoding")).toEqual(["gzip"]);
  });
});

describe("placeholders", () => {
  it("swaps the placeholder for the real value in header, query, path and body for its host", async () => {
    const body = JSON.stringify({ key: PLACEHOLDER, n: 1 });
    const res = await request(url("openai.test", `/v1/${PLACEHOLDER}/x?key=${PLACEHOLDER}`), {
      method: "POST",
      dispatcher: agent1,
      body,
      headers: { authorization: `Bearer ${PLACEHOLDER}`, "content-type": "application/json" },
    });
    const echoed = (await res.body.json()) as { url: string; rawHeaders: string[]; body: string; length: string };
    const real = SECRETS.PCX_E2E_OPENAI;
    const seen = seenBy(`/v1/${real}/x?key=${real}`);
    expect(headerValues(seen.rawHeaders, "authorization")).toEqual([`Bearer ${real}`]);
    // The upstream's echo comes back scrubbed; what it received was the real value, with a correct length.
    expect(echoed.url).toBe("/v1/[REDACTED]/x?key=[REDACTED]");
    expect(JSON.parse(echoed.body)).toEqual({ key: "[REDACTED]", n: 1 });
    expect(Number(echoed.length)).toBe(Buffer.byteLength(JSON.stringify({ key: real, n: 1 })));
    const line = await proxy.audit.waitFor((l) => String(l.path).startsWith("/v1/"));
    expect(line.placeholders).toEqual(["openai"]);
    expect(line.path).toBe(`/v1/${PLACEHOLDER}/x?key=${PLACEHOLDER}`);
  });

  it("scrubs a secret the upstream stored and hands back on a later request that did not carry it", async () => {
    const stored = await request(url("openai.test", "/notes"), { method: "POST", dispatcher: agent1, body: JSON.stringify({ note: PLACEHOLDER }), headers: { "content-type": "application/json" } });
    expect(stored.statusCode).toBe(201);
    await stored.body.text();
    expect(storedNote).toContain(SECRETS.PCX_E2E_OPENAI);
    // No placeholder on this one: nothing was swapped in, and the stored value still comes back redacted.
    const later = await request(url("openai.test", "/notes"), { dispatcher: agent1 });
    const text = await later.body.text();
    expect(text).not.toContain(SECRETS.PCX_E2E_OPENAI);
    expect(JSON.parse(text)).toEqual({ note: "[REDACTED]" });
    // Nor in a reason phrase.
    const reason = await new Promise<string>((resolve, reject) => {
      https.get(url("openai.test", "/notes-in-reason"), { agent: new HttpsProxyAgent(`http://agent-1:${SECRETS.PCX_E2E_T1}@127.0.0.1:${proxy.port}`), ca: proxy.caPem }, (res) => {
        res.resume();
        resolve(res.statusMessage ?? "");
      }).on("error", reject);
    });
    expect(reason).not.toContain(SECRETS.PCX_E2E_OPENAI);
    expect(reason).toBe("OK");
  });

  it("answers Expect: 100-continue itself when it must read the body for placeholders", async () => {
    const body = JSON.stringify({ key: PLACEHOLDER });
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = https.request(url("openai.test", "/v1/continue"), {
        method: "POST",
        agent: new HttpsProxyAgent(`http://agent-1:${SECRETS.PCX_E2E_T1}@127.0.0.1:${proxy.port}`),
        ca: proxy.caPem,
        headers: { "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(body)), Expect: "100-continue" },
      }, resolve);
      req.on("error", reject);
      req.on("continue", () => req.end(body));
    });
    let text = "";
    for await (const chunk of res) text += chunk;
    expect(res.statusCode).toBe(200);
    expect(JSON.parse((JSON.parse(text) as { body: string }).body)).toEqual({ key: "[REDACTED]" });
    expect(seenBy("/v1/continue").rawHeaders.map((h) => h.toLowerCase())).not.toContain("expect");
  });

  it.each([
    ["a header", { headers: { authorization: `Bearer ${PLACEHOLDER}` } }, "/exfil-header"],
    ["the query", {}, `/exfil?k=${PLACEHOLDER}`],
    ["the body", { method: "POST", body: `{"k":"${PLACEHOLDER}"}`, headers: { "content-type": "application/json" } }, "/exfil-body"],
  ] as const)("denies the placeholder headed to another host in %s (exfiltration)", async (_where, options, path) => {
    const before = upstream.seen.length;
    const res = await request(url("other.test", path), { dispatcher: agent1, ...(options as object) });
    expect(res.statusCode).toBe(403);
    const body = (await res.body.json()) as { error: { message: string; request_id: string } };
    expect(body.error.message).toContain("placeholder sent to a host not allowed to receive it");
    expect(upstream.seen.length).toBe(before);
    const line = await proxy.audit.waitFor((l) => l.req_id === body.error.request_id);
    expect(line).toMatchObject({ msg: "denied", placeholders: ["openai"], rule: "openai" });
  });
});

describe("reload and start-up", () => {
  it("takes a new policy for new requests", async () => {
    const next = parsePolicy(
      `${policyYaml(pki.caFile, `    - { name: api-closed, action: deny, hosts: [api.test], ports: [${upstream.port}] }\n`)}\nca: { dir: ${JSON.stringify(proxy.caDir)} }\n`,
    );
    await proxy.proxy.reload(next);
    try {
      const refused = (await openConnect(proxy.port, `api.test:${upstream.port}`, `Proxy-Authorization: ${basic("agent-1", SECRETS.PCX_E2E_T1)}\r\n`).catch((e: unknown) => e)) as { response: string };
      expect(refused.response).toMatch(/^HTTP\/1\.1 403 [\s\S]*"rule":"api-closed"/);
    } finally {
      await proxy.proxy.reload(parsePolicy(`${policyYaml(pki.caFile)}\nca: { dir: ${JSON.stringify(proxy.caDir)} }\n`));
    }
    const fresh = new ProxyAgent({ uri: proxy.url, token: basic("agent-1", SECRETS.PCX_E2E_T1), requestTls: { ca: proxy.caPem } });
    const res = await request(url("api.test", "/after-reload"), { dispatcher: fresh });
    expect(res.statusCode).toBe(200);
    await res.body.text();
    await fresh.close();
  });

  it("refuses to start as an open proxy: no clients on a non-loopback listener", async () => {
    const loaded = parsePolicy(`version: 1\nca: { dir: ${JSON.stringify(tempDir("open"))} }\n`);
    await expect(createProxy({ policy: loaded, listen: "0.0.0.0:0" })).rejects.toThrow(/open proxy/);
  });

  it("explain prints the decision and the names of credentials, never a value", async () => {
    assertBuilt();
    const file = join(tempDir("explain"), "p.yaml");
    writeFileSync(file, policyYaml(pki.caFile));
    const { stdout } = await promisify(execFile)(process.execPath, [CLI, "explain", "--policy", file, "--client", "agent-1", "GET", `https://api.test:${upstream.port}/repos/x`], { env: { ...process.env } });
    const explanation = JSON.parse(stdout) as { decision: string; rule: string; credentials: { name: string; header: string; secrets: string[] }[] };
    expect(explanation).toMatchObject({ decision: "allow", rule: "api-read", credentials: [{ name: "github", header: "Authorization", secrets: ["github"] }] });
    for (const value of [...Object.values(SECRETS), PLACEHOLDER]) expect(stdout).not.toContain(value);
    const denied = await promisify(execFile)(process.execPath, [CLI, "explain", "--policy", file, "POST", `https://api.test:${upstream.port}/repos/x`]).catch((error: { code: number; stdout: string }) => error);
    expect("code" in denied && denied.code).toBe(3);
    expect(JSON.parse(denied.stdout)).toMatchObject({ decision: "deny", rule: null, credentials: [] });
  });

  it("explain is a dry run of the proxy's own stages: a name resolving to a private address is denied, as the proxy denies it", async () => {
    const yaml = `version: 1\nupstream:\n  resolve: { sneaky.test: 127.0.0.1, inside.test: 10.1.2.3 }\nnetwork:\n  default: allow\n  private_destinations: deny\n`;
    const explained = await explain(parsePolicy(yaml).policy, "GET", "https://sneaky.test/x", null);
    expect(explained).toMatchObject({ decision: "deny", rule: "network.private_destinations" });
    expect(explained.reason).toContain("127.0.0.1");
    expect((await explain(parsePolicy(yaml).policy, "GET", "https://inside.test/x", null)).decision).toBe("deny");
    const live = await startProxy(yaml);
    try {
      const answer = await request("https://sneaky.test/x", { dispatcher: live.dispatcher });
      expect(answer.statusCode).toBe(403);
      expect(((await answer.body.json()) as { error: { rule: string } }).error.rule).toBe("network.private_destinations");
    } finally {
      await live.close();
    }
    const allowed = await explain(parsePolicy(`version: 1\nupstream:\n  resolve: { fine.test: 127.0.0.1 }\nnetwork:\n  default: allow\n  allow_ips: [127.0.0.1/32]\n`).policy, "GET", "https://fine.test/x", null);
    expect(allowed).toMatchObject({ decision: "allow" });
    expect(allowed.destination).toContain("127.0.0.1");
  });
});

describe("secret hygiene", () => {
  it("no secret value appears in any audit line, diagnostic line or error body written in this file's tests", () => {
    const everything = [...proxy.audit.raw, ...proxy.diagnostics.raw, ...ssrf.audit.raw, ...ssrf.diagnostics.raw].join("");
    expect(proxy.audit.raw.length).toBeGreaterThan(20);
    for (const value of Object.values(SECRETS)) {
      expect(everything).not.toContain(value);
      expect(everything).not.toContain(value.split("\r\n")[0]);
    }
  });

  it("the scrubber catches a secret that reaches a log through any field", async () => {
    const probe = await request(url("api.test", `/echo?leak=${SECRETS.PCX_E2E_GITHUB}`), { dispatcher: agent1 });
    await probe.body.text();
    const line = await proxy.audit.waitFor((l) => String(l.path).startsWith("/echo?leak="));
    expect(line.path).toBe("/echo?leak=[REDACTED]");
  });
});
