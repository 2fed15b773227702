import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { HttpsProxyAgent } from "https-proxy-agent";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { ProxyAgent, request } from "undici";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";
import { basic, bearer, callApi, closed, connectStatus, getOnTunnel, openTunnel } from "./helpers/clients-api.js";

const ADMIN_TOKEN = `admin-${randomBytes(16).toString("hex")}`;
const FILE_TOKEN = `file-${randomBytes(16).toString("hex")}`;
const SECRET_A = `cred-a-${randomBytes(8).toString("hex")}`;
const SECRET_B = `cred-b-${randomBytes(8).toString("hex")}`;
const SECRET_SHARED = `cred-shared-${randomBytes(8).toString("hex")}`;
Object.assign(process.env, { PCX_CL_ADMIN: ADMIN_TOKEN, PCX_CL_FILE: FILE_TOKEN, PCX_CL_A: SECRET_A, PCX_CL_B: SECRET_B, PCX_CL_SHARED: SECRET_SHARED });

let pki: ServerPki;
let upstream: TestUpstream;
let wss: WebSocketServer;
let proxy: TestProxy;
let admin: string;

function policy(port: number): string {
  return `
version: 1
upstream:
  trust: [${JSON.stringify(pki.caFile)}]
  resolve: { a.test: 127.0.0.1, b.test: 127.0.0.1, shared.test: 127.0.0.1 }
secrets:
  a: { env: PCX_CL_A }
  b: { env: PCX_CL_B }
  shared: { env: PCX_CL_SHARED }
clients:
  - { name: file-agent, token: { env: PCX_CL_FILE } }
network:
  default: deny
  allow_ips: [127.0.0.1/32]
  rules:
    - { name: shared-read, action: allow, hosts: [shared.test], ports: [${port}], methods: [GET] }
credentials:
  - { name: cred-a, hosts: [a.test], header: { name: X-Cred-A, value: "\${secrets.a}" } }
  - { name: cred-b, hosts: [a.test], header: { name: X-Cred-B, value: "\${secrets.b}" } }
  - { name: cred-shared, hosts: [shared.test], header: { name: X-Cred-Shared, value: "\${secrets.shared}" } }
admin:
  token: { env: PCX_CL_ADMIN }
  max_ttl: 1h
`;
}

const EXPECTED: Record<string, string> = { "x-cred-a": SECRET_A, "x-cred-b": SECRET_B, "x-cred-shared": SECRET_SHARED };

/**
 * The upstream says which credentials it received, and whether each was the real value (an
 * echoed secret would be scrubbed on its way back).
 */
function echo(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  const creds = Object.fromEntries(Object.entries(EXPECTED).filter(([name]) => req.headers[name] !== undefined).map(([name, value]) => [name, req.headers[name] === value]));
  const body = JSON.stringify({ path: req.url, creds });
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body);
}

async function register(body: Record<string, unknown>): Promise<{ name: string; token: string; expires_at: string }> {
  const answer = await callApi(admin, "POST", "/v1/clients", { token: ADMIN_TOKEN, body });
  expect(answer.status, JSON.stringify(answer.body)).toBe(201);
  return answer.body;
}

const allowA = (port: number, extra: Record<string, unknown> = {}) => ({ name: "own-a", action: "allow", hosts: ["a.test"], ports: [port], ...extra });

function through(token: string): ProxyAgent {
  return new ProxyAgent({ uri: proxy.url, token: `Bearer ${token}`, requestTls: { ca: proxy.caPem } });
}

async function fetchVia(agent: ProxyAgent, url: string): Promise<{ status: number; body: any }> {
  const res = await request(url, { dispatcher: agent });
  const text = await res.body.text();
  return { status: res.statusCode, body: text.startsWith("{") ? JSON.parse(text) : text };
}

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream(echo, pki);
  wss = new WebSocketServer({ server: upstream.server });
  wss.on("connection", (ws) => ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary })));
  proxy = await startProxy(policy(upstream.port), { adminListen: "127.0.0.1:0" });
  admin = `http://127.0.0.1:${proxy.proxy.adminAddress!.port}`;
});

afterAll(async () => {
  for (const client of wss?.clients ?? []) client.terminate();
  await new Promise<void>((resolve) => (wss ? wss.close(() => resolve()) : resolve()));
  await proxy?.close();
  await upstream?.close();
});

describe("/v1/clients: admin authentication", () => {
  it("answers 401 with WWW-Authenticate without the admin token or with a wrong one", async () => {
    for (const [method, path] of [["GET", "/v1/clients"], ["POST", "/v1/clients"], ["GET", "/v1/clients/x"], ["DELETE", "/v1/clients/x"]] as const) {
      const none = await callApi(admin, method, path, { body: { name: "nope", ttl: "1m" } });
      expect(none.status).toBe(401);
      expect(none.headers["www-authenticate"]).toMatch(/^Bearer realm="portcullis admin"/);
      expect(none.body.error.type).toBe("unauthorized");
      const wrong = await callApi(admin, method, path, { token: `${ADMIN_TOKEN}x`, body: { name: "nope", ttl: "1m" } });
      expect(wrong.status).toBe(401);
      expect(wrong.headers["www-authenticate"]).toContain('error="invalid_token"');
    }
    const short = await callApi(admin, "GET", "/v1/clients", { token: ADMIN_TOKEN.slice(0, 10) });
    expect(short.status).toBe(401);
    expect((await callApi(admin, "GET", "/v1/clients", { token: ADMIN_TOKEN })).status).toBe(200);
    // Nothing was created by the refused calls.
    expect((await callApi(admin, "GET", "/v1/clients/nope", { token: ADMIN_TOKEN })).status).toBe(404);
  });
});

describe("/v1/clients: registration", () => {
  it("creates a client whose token works at once, as Bearer and as Basic name:token", async () => {
    const created = await register({ name: "sbx-1", ttl: "30m", rules: [allowA(upstream.port)], credentials: ["cred-a"] });
    expect(created.name).toBe("sbx-1");
    expect(Buffer.from(created.token, "base64url").length).toBeGreaterThanOrEqual(32);
    const expires = Date.parse(created.expires_at);
    expect(expires - Date.now()).toBeGreaterThan(29 * 60_000);
    expect(expires - Date.now()).toBeLessThanOrEqual(30 * 60_000);

    const agent = through(created.token);
    const answer = await fetchVia(agent, `https://a.test:${upstream.port}/hello`);
    // An agent that sends its own token somewhere: the audit line must not show it.
    expect((await fetchVia(agent, `https://a.test:${upstream.port}/leak?t=${created.token}`)).status).toBe(200);
    await agent.close();
    expect(answer.status).toBe(200);
    const leak = await proxy.audit.waitFor((l) => l.msg === "http" && String(l.path).startsWith("/leak"));
    expect(leak.path).toBe("/leak?t=[REDACTED]");
    expect(await connectStatus(proxy.port, `a.test:${upstream.port}`, basic("sbx-1", created.token))).toBe("HTTP/1.1 200");
    expect(await connectStatus(proxy.port, `a.test:${upstream.port}`, basic("sbx-1", `${created.token}x`))).toMatch(/^HTTP\/1.1 407/);
    const line = await proxy.audit.waitFor((l) => l.msg === "http" && l.path === "/hello");
    expect(line.client).toBe("sbx-1");
    expect(line.rule).toBe("own-a");
    // The token never reaches a log line, whatever field it could hide in.
    expect(proxy.audit.raw.join("")).not.toContain(created.token);
    expect(proxy.diagnostics.raw.join("")).not.toContain(created.token);
  });

  it("applies a registered client's rules to it alone, before the file's", async () => {
    const own = await register({ name: "sbx-rules", ttl: "10m", rules: [allowA(upstream.port), { name: "no-shared", action: "deny", hosts: ["shared.test"], ports: [upstream.port] }] });
    const plain = await register({ name: "sbx-plain", ttl: "10m" });
    // Its own allow: a.test is open to it, to nobody else.
    expect(await connectStatus(proxy.port, `a.test:${upstream.port}`, bearer(own.token))).toBe("HTTP/1.1 200");
    expect(await connectStatus(proxy.port, `a.test:${upstream.port}`, bearer(plain.token))).toMatch(/^HTTP\/1.1 403/);
    expect(await connectStatus(proxy.port, `a.test:${upstream.port}`, basic("file-agent", FILE_TOKEN))).toMatch(/^HTTP\/1.1 403/);
    // Its own deny comes before the file's allow (the whole host: refused at CONNECT); the others still get the file's rule.
    expect(await connectStatus(proxy.port, `shared.test:${upstream.port}`, bearer(own.token))).toMatch(/^HTTP\/1.1 403/);
    const plainAgent = through(plain.token);
    expect((await fetchVia(plainAgent, `https://shared.test:${upstream.port}/x`)).status).toBe(200);
    await plainAgent.close();
    const denied = await proxy.audit.waitFor((l) => l.client === "sbx-rules" && l.msg === "denied" && l.host === "shared.test");
    expect(denied.rule).toBe("no-shared");
  });

  it("enables only the listed credentials of the file for it", async () => {
    const listed = await register({ name: "sbx-creds", ttl: "10m", rules: [allowA(upstream.port)], credentials: ["cred-b"] });
    const none = await register({ name: "sbx-nocreds", ttl: "10m" });
    const listedAgent = through(listed.token);
    const a = await fetchVia(listedAgent, `https://a.test:${upstream.port}/creds`);
    expect(a.body.creds).toEqual({ "x-cred-b": true });
    // cred-shared is not listed: the file's rule lets it through, without the file's credential.
    const shared = await fetchVia(listedAgent, `https://shared.test:${upstream.port}/creds`);
    expect(shared.status).toBe(200);
    expect(shared.body.creds).toEqual({});
    const noneAgent = through(none.token);
    expect((await fetchVia(noneAgent, `https://shared.test:${upstream.port}/creds`)).body.creds).toEqual({});
    // A client of the file still gets every credential that matches.
    const fileAgent = new ProxyAgent({ uri: proxy.url, token: `Bearer ${FILE_TOKEN}`, requestTls: { ca: proxy.caPem } });
    expect((await fetchVia(fileAgent, `https://shared.test:${upstream.port}/creds`)).body.creds).toEqual({ "x-cred-shared": true });
    await Promise.all([listedAgent.close(), noneAgent.close(), fileAgent.close()]);
  });

  it("lists and shows clients without their tokens", async () => {
    const created = await register({ name: "sbx-list", ttl: "5m", rules: [allowA(upstream.port)], credentials: ["cred-a"] });
    const list = await callApi(admin, "GET", "/v1/clients", { token: ADMIN_TOKEN });
    expect(list.status).toBe(200);
    const entry = list.body.clients.find((client: { name: string }) => client.name === "sbx-list");
    expect(entry).toMatchObject({ name: "sbx-list", credentials: ["cred-a"], expires_at: created.expires_at });
    expect(entry.rules[0]).toMatchObject({ name: "own-a", action: "allow", hosts: ["a.test"] });
    const one = await callApi(admin, "GET", "/v1/clients/sbx-list", { token: ADMIN_TOKEN });
    expect(one.status).toBe(200);
    expect(one.body).toEqual(entry);
    for (const text of [JSON.stringify(list.body), JSON.stringify(one.body)]) {
      expect(text).not.toContain(created.token);
      expect(text).not.toMatch(/token/);
    }
    expect((await callApi(admin, "GET", "/v1/clients/never-made", { token: ADMIN_TOKEN })).body.error.type).toBe("not_found");
  });
});

describe("/v1/clients: revocation and expiry", () => {
  it("revoking refuses the token (407) and closes its open tunnel and WebSocket", async () => {
    const created = await register({ name: "sbx-revoke", ttl: "30m", rules: [allowA(upstream.port)] });
    const other = await register({ name: "sbx-stays", ttl: "30m", rules: [allowA(upstream.port)] });
    const tunnel = await openTunnel(proxy.port, "a.test", upstream.port, bearer(created.token), proxy.caPem);
    expect(await getOnTunnel(tunnel, "a.test", "/keep-alive")).toMatch(/^HTTP\/1.1 200/);
    const agent = new HttpsProxyAgent(proxy.url, { headers: { "Proxy-Authorization": `Bearer ${created.token}` } });
    const ws = new WebSocket(`wss://a.test:${upstream.port}/ws`, { agent, ca: proxy.caPem });
    await new Promise<void>((resolve, reject) => ws.once("open", () => resolve()).once("error", reject));
    const echoed = new Promise<string>((resolve) => ws.once("message", (data) => resolve(String(data))));
    ws.send("still here");
    expect(await echoed).toBe("still here");
    const survivor = await openTunnel(proxy.port, "a.test", upstream.port, bearer(other.token), proxy.caPem);

    const tunnelClosed = closed(tunnel);
    const wsClosed = closed(ws);
    const answer = await callApi(admin, "DELETE", "/v1/clients/sbx-revoke", { token: ADMIN_TOKEN });
    expect(answer.status).toBe(204);
    await Promise.all([tunnelClosed, wsClosed]);
    expect(await connectStatus(proxy.port, `a.test:${upstream.port}`, bearer(created.token))).toMatch(/^HTTP\/1.1 407/);
    expect(await connectStatus(proxy.port, `a.test:${upstream.port}`, basic("sbx-revoke", created.token))).toMatch(/^HTTP\/1.1 407/);
    expect((await callApi(admin, "GET", "/v1/clients/sbx-revoke", { token: ADMIN_TOKEN })).status).toBe(404);
    expect((await callApi(admin, "DELETE", "/v1/clients/sbx-revoke", { token: ADMIN_TOKEN })).status).toBe(404);
    // Another client's tunnel is untouched.
    expect(await getOnTunnel(survivor, "a.test", "/still")).toMatch(/^HTTP\/1.1 200/);
    survivor.destroy();
    agent.destroy();
  });

  it("an expired client is refused and its tunnel closed when it expires", async () => {
    const created = await register({ name: "sbx-expire", ttl: "1s", rules: [allowA(upstream.port)] });
    const tunnel = await openTunnel(proxy.port, "a.test", upstream.port, bearer(created.token), proxy.caPem);
    expect(await getOnTunnel(tunnel, "a.test", "/before-expiry")).toMatch(/^HTTP\/1.1 200/);
    await closed(tunnel);
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(created.expires_at));
    expect(await connectStatus(proxy.port, `a.test:${upstream.port}`, bearer(created.token))).toMatch(/^HTTP\/1.1 407/);
    const list = await callApi(admin, "GET", "/v1/clients", { token: ADMIN_TOKEN });
    expect(list.body.clients.map((client: { name: string }) => client.name)).not.toContain("sbx-expire");
    // The name is free again.
    await register({ name: "sbx-expire", ttl: "1m" });
  });
});

describe("/v1/clients: bad input is 400 with the reason", () => {
  const cases: [string, { body?: unknown; raw?: string }, RegExp][] = [
    ["invalid JSON", { raw: "{nope" }, /not valid JSON/],
    ["not an object", { body: [1, 2] }, /expected object/i],
    ["an unknown key", { body: { name: "x1", ttl: "1m", colour: "red" } }, /unknown key "colour"/],
    ["an unknown rule key", { body: { name: "x2", ttl: "1m", rules: [{ name: "r", action: "allow", hosts: ["a.test"], host: "a.test" }] } }, /rules\.0: unknown key "host"/],
    ["a rule without hosts", { body: { name: "x3", ttl: "1m", rules: [{ name: "r", action: "allow" }] } }, /rules\.0\.hosts/],
    ["a bad action", { body: { name: "x4", ttl: "1m", rules: [{ name: "r", action: "maybe", hosts: ["a.test"] }] } }, /rules\.0\.action/],
    ["rules naming other clients", { body: { name: "x5", ttl: "1m", rules: [{ name: "r", action: "allow", hosts: ["a.test"], clients: ["file-agent"] }] } }, /apply to it alone/],
    ["duplicate rule names", { body: { name: "x6", ttl: "1m", rules: [allowA(443), allowA(443)] } }, /duplicate rule name/],
    ["a name of the file", { body: { name: "file-agent", ttl: "1m" } }, /"file-agent" is a client of the policy file/],
    ["a bad name", { body: { name: "no spaces", ttl: "1m" } }, /^name: /],
    ["a missing ttl", { body: { name: "x7" } }, /ttl/],
    ["a bad ttl", { body: { name: "x8", ttl: "soon" } }, /ttl: expected a duration/],
    ["a ttl over max_ttl", { body: { name: "x9", ttl: "2h" } }, /ttl: 2h is over admin.max_ttl \(1h\)/],
    ["a ttl in seconds over max_ttl", { body: { name: "x10", ttl: 7200 } }, /over admin.max_ttl/],
    ["an unknown credential", { body: { name: "x11", ttl: "1m", credentials: ["cred-a", "cred-z"] } }, /credentials\.1: "cred-z" is not a credential of the policy file/],
  ];
  for (const [what, input, reason] of cases) {
    it(`refuses ${what}`, async () => {
      const answer = await callApi(admin, "POST", "/v1/clients", { token: ADMIN_TOKEN, ...input });
      expect(answer.status).toBe(400);
      expect(answer.headers["x-portcullis-error"]).toBe("bad_request");
      expect(answer.body.error.type).toBe("bad_request");
      expect(answer.body.error.message).toMatch(reason);
    });
  }

  it("refuses a name that is already registered", async () => {
    await register({ name: "sbx-twice", ttl: "1m" });
    const again = await callApi(admin, "POST", "/v1/clients", { token: ADMIN_TOKEN, body: { name: "sbx-twice", ttl: "1m" } });
    expect(again.status).toBe(400);
    expect(again.body.error.message).toMatch(/already registered/);
  });
});

describe("admin section of the policy", () => {
  it("defaults to memory and 24h, and names a malformed redis URL or max_ttl", async () => {
    const { parsePolicy, PolicyInvalidError } = await import("../src/policy/load.js");
    const defaults = parsePolicy("version: 1\nadmin: { token: { env: X } }\n").policy.admin;
    expect(defaults.state).toBe("memory");
    expect(defaults.max_ttl).toBe(24 * 3_600_000);
    expect(parsePolicy('version: 1\nadmin: { state: "redis://10.0.0.5:6379/2" }\n').policy.admin.state).toBe("redis://10.0.0.5:6379/2");
    expect(parsePolicy("version: 1\nadmin: { state: /var/lib/portcullis/clients.json }\n").policy.admin.state).toBe("/var/lib/portcullis/clients.json");
    try {
      parsePolicy('version: 1\nadmin:\n  state: "redis://"\n  max_ttl: forever\n');
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(PolicyInvalidError);
      const text = (error as Error).message;
      expect(text).toMatch(/3:\d+: admin.state: a Redis state must look like "redis:\/\/HOST:PORT"/);
      expect(text).toMatch(/4:\d+: admin.max_ttl: expected a duration/);
    }
  });
});
