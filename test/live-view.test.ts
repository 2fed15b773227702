import http, { type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyAgent, request } from "undici";
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { LiveView } from "../src/admin/live-view.js";
import { createAdminServer, listenAdmin } from "../src/admin/server.js";
import { uiRoutes } from "../src/admin/ui-routes.js";
import { assertBuilt, startCli } from "./helpers/cli.js";
import type { PublishedRecord } from "../src/log/audit-feed.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { SseClient } from "./helpers/sse-client.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const ADMIN_TOKEN = "admin-token-for-live-view-0b7e";
const SECRET = "live-view-secret-value-51c2";
process.env.PORTCULLIS_LIVE_ADMIN_TOKEN = ADMIN_TOKEN;
process.env.PORTCULLIS_LIVE_SECRET = SECRET;
// With admin.token set the client registry is on, and every sandbox authenticates (README).
const SANDBOX_TOKEN = "live-view-sandbox-token-3d9a";
process.env.PORTCULLIS_LIVE_SANDBOX = SANDBOX_TOKEN;

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: TestProxy;
let admin: string;
let sandbox: ProxyAgent;
const clients: SseClient[] = [];
const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => (req.resume(), res.end("ok")), pki);
  proxy = await startProxy(
    policyTrusting(
      pki.caFile,
      `admin: { token: { env: PORTCULLIS_LIVE_ADMIN_TOKEN } }\nclients:\n  - { name: agent, token: { env: PORTCULLIS_LIVE_SANDBOX } }\nsecrets:\n  api: { env: PORTCULLIS_LIVE_SECRET }\n` +
        `credentials:\n  - { name: api, hosts: [localhost], header: { name: Authorization, value: "Bearer \${secrets.api}" } }\n`,
      `network:\n  default: deny\n  allow_ips: [127.0.0.1/32]\n  rules:\n    - { name: local, action: allow, hosts: [localhost], ports: [${upstream.port}], paths: ["/ok/**"] }\n`,
    ),
    { adminListen: "127.0.0.1:0" },
  );
  admin = `http://127.0.0.1:${proxy.proxy.adminAddress!.port}`;
  sandbox = new ProxyAgent({ uri: proxy.url, token: `Bearer ${SANDBOX_TOKEN}`, requestTls: { ca: proxy.caPem } });
});

afterAll(async () => {
  for (const client of clients) client.close();
  await sandbox?.close();
  await proxy?.close();
  await upstream?.close();
});

async function open(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  const client = await SseClient.open(url, headers);
  clients.push(client);
  return client;
}

function fakeRecord(n: number, extra: Partial<PublishedRecord> = {}): PublishedRecord {
  return {
    msg: "http", level: 30, time: Date.now(), req_id: `r${n}`, client: "agent", client_addr: "127.0.0.1", method: "GET", scheme: "https",
    host: `h${n % 3}.example`, port: 443, path: `/p/${n}`, status: 200, duration_ms: 1, req_bytes: 0, resp_bytes: 2, decision: "allow",
    rule: "r", reason: null, credentials: [], placeholders: [], ...extra,
  };
}

describe("/ui/events on the admin listener", () => {
  it("needs the admin token: 401 without or with a wrong one, and never takes it from the stream's URL", async () => {
    for (const headers of [{}, { authorization: "Bearer wrong" }, { authorization: `Basic ${ADMIN_TOKEN}` }]) {
      const res = await request(`${admin}/ui/events`, { headers });
      expect(res.statusCode).toBe(401);
      expect(res.headers["www-authenticate"]).toContain("Bearer");
      expect(await res.body.text()).not.toContain(ADMIN_TOKEN);
    }
    expect((await request(`${admin}/ui/events?token=${ADMIN_TOKEN}`)).statusCode).toBe(401);
    expect((await request(`${admin}/ui`)).statusCode).toBe(401);
    expect((await request(`${admin}/ui?token=wrong`)).statusCode).toBe(401);
  });

  it("streams allowed and denied exchanges as their scrubbed audit fields, without headers, bodies or secrets", { timeout: 20_000 }, async () => {
    const stream = await open(`${admin}/ui/events`, auth);
    expect(stream.response.statusCode).toBe(200);
    expect(stream.response.headers["content-type"]).toContain("text/event-stream");
    const ok = await request(`https://localhost:${upstream.port}/ok/live?q=${SECRET}`, { dispatcher: sandbox });
    await ok.body.text();
    const denied = await request(`https://localhost:${upstream.port}/forbidden`, { dispatcher: sandbox });
    expect(denied.statusCode).toBe(403);
    await denied.body.text();

    const allowed = JSON.parse((await stream.waitFor((e) => e.event === "record" && e.data.includes("/ok/live"))).data);
    expect(allowed).toMatchObject({ msg: "http", decision: "allow", status: 200, method: "GET", host: "localhost", port: upstream.port, path: "/ok/live?q=[REDACTED]", rule: "local", credentials: ["api"] });
    expect(typeof allowed.time).toBe("number");
    expect(typeof allowed.duration_ms).toBe("number");
    expect(allowed).not.toHaveProperty("req_headers");
    expect(allowed).not.toHaveProperty("req_body");
    const refused = JSON.parse((await stream.waitFor((e) => e.event === "record" && e.data.includes("/forbidden"))).data);
    expect(refused).toMatchObject({ decision: "deny", status: 403, error: { type: "policy_denied" } });
    expect(refused.reason).toBeTruthy();

    // The admin token is a secret like any other: scrubbed from what the sandbox sends too.
    await (await request(`https://localhost:${upstream.port}/ok/admin?t=${ADMIN_TOKEN}`, { dispatcher: sandbox })).body.text();
    const withToken = JSON.parse((await stream.waitFor((e) => e.event === "record" && e.data.includes("/ok/admin"))).data);
    expect(withToken.path).toBe("/ok/admin?t=[REDACTED]");
    const stats = JSON.parse((await stream.waitFor((e) => e.event === "stats" && JSON.parse(e.data).total >= 2)).data);
    expect(stats.hosts).toContainEqual(expect.objectContaining({ name: "localhost", total: expect.any(Number), denied: expect.any(Number) }));
    expect(stats).toHaveProperty("open_tunnels");
    expect(stats).toHaveProperty("open_websockets");
    for (const event of stream.events) {
      expect(event.data).not.toContain(SECRET);
      expect(event.data).not.toContain(ADMIN_TOKEN);
    }
  });

  it("replays recent records to a late joiner, and only the newer ones after Last-Event-ID", async () => {
    const late = await open(`${admin}/ui/events`, auth);
    await late.waitFor((e) => e.event === "stats");
    const replayed = late.records();
    expect(replayed.map((r) => r.path)).toEqual(expect.arrayContaining(["/ok/live?q=[REDACTED]", "/forbidden"]));
    const first = replayed[0]!.id;
    const resumed = await open(`${admin}/ui/events`, { ...auth, "last-event-id": String(first) });
    await resumed.waitFor((e) => e.event === "stats");
    expect(resumed.records().map((r) => r.id)).toEqual(replayed.slice(1).map((r) => r.id));
  });

  it("trades ?token= for an HttpOnly session cookie and a redirect that drops the token; the cookie opens the page and its stream", async () => {
    const login = await request(`${admin}/ui?token=${ADMIN_TOKEN}`);
    expect(login.statusCode).toBe(303);
    expect(login.headers.location).toBe("/ui");
    const cookie = String(login.headers["set-cookie"]);
    expect(cookie).toMatch(/^portcullis_ui=[\w-]{40,}; Path=\/ui; HttpOnly; SameSite=Strict/);
    expect(cookie).not.toContain(ADMIN_TOKEN);
    const session = cookie.split(";")[0]!;
    const page = await request(`${admin}/ui`, { headers: { cookie: session } });
    expect(page.statusCode).toBe(200);
    expect(page.headers["content-type"]).toContain("text/html");
    expect(String(page.headers["content-security-policy"])).toContain("default-src 'none'");
    const html = await page.body.text();
    expect(html).not.toMatch(/<(script|link|img)[^>]+(src|href)="(https?:)?\/\//); // nothing from elsewhere
    const stream = await open(`${admin}/ui/events`, { cookie: session });
    expect(stream.response.statusCode).toBe(200);
    expect((await request(`${admin}/ui/events`, { headers: { cookie: "portcullis_ui=forged" } })).statusCode).toBe(401);
  });
});

describe("LiveView memory bounds", () => {
  let server: Server;
  let live: LiveView;
  let url: string;

  beforeAll(async () => {
    live = new LiveView({ ringSize: 5, maxBacklogBytes: 64 * 1024, maxCounterKeys: 2, openCounts: async () => ({ tunnels: 0, websockets: 0 }) });
    server = http.createServer((req, res) => live.attach(req, res));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });

  afterAll(async () => {
    live.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("keeps only the last N records for late joiners and caps counter keys", async () => {
    for (let n = 1; n <= 12; n++) live.add(fakeRecord(n, { client: `c${n}` }));
    const client = await open(url);
    const stats = JSON.parse((await client.waitFor((e) => e.event === "stats")).data);
    expect(client.records().map((r) => r.path)).toEqual(["/p/8", "/p/9", "/p/10", "/p/11", "/p/12"]);
    expect(stats.total).toBe(12);
    expect(stats.clients.map((c: { name: string }) => c.name).sort()).toEqual(["_other", "c1", "c2"]);
    expect(stats.clients.find((c: { name: string }) => c.name === "_other").total).toBe(10);
    client.close();
  });

  it("drops a page that stops reading instead of buffering for it, and keeps serving the others", { timeout: 20_000 }, async () => {
    const stalled = await open(url);
    stalled.response.pause();
    const reader = await open(url);
    await reader.waitFor((e) => e.event === "stats");
    const big = "x".repeat(2000);
    let sent = 0;
    // The paused page's socket buffers fill first; then its backlog passes the bound and it is dropped.
    while (live.droppedPages === 0 && sent < 20_000) {
      live.add(fakeRecord(1000 + sent, { reason: big }));
      sent++;
      if (sent % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    expect(live.droppedPages).toBe(1);
    expect(live.pages).toBe(1);
    live.add(fakeRecord(99_999, { path: "/after-drop" }));
    await reader.waitFor((e) => e.event === "record" && e.data.includes("/after-drop"));
  });
});

describe("/ui/budgets", () => {
  it("relays the admin listener's own /budgets (with the admin token) when it answers 200, and 404 otherwise", async () => {
    const counters = [{ rule: "daily", client: "agent", window_start: "2026-12-01T00:00:00Z", tokens: 10, requests: 1, limit_tokens: 100, limit_requests: null }];
    let budgetsAuth: string | undefined;
    let budgetsUp = true;
    const live = new LiveView({ openCounts: async () => ({ tunnels: 0, websockets: 0 }) });
    let base = "";
    const server = createAdminServer({ ready: () => true, details: () => ({}), metrics: async () => ({ contentType: "text/plain", body: "" }) }, [
      ...uiRoutes({ live, adminToken: async () => ADMIN_TOKEN, selfUrl: () => base }),
      {
        path: "/budgets",
        methods: ["GET"],
        handle: (req, res) => {
          budgetsAuth = req.headers.authorization;
          if (!budgetsUp) return void res.writeHead(503).end();
          res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(counters));
        },
      },
    ]);
    const address = await listenAdmin(server, "127.0.0.1", 0);
    base = `http://127.0.0.1:${address.port}`;
    try {
      expect((await request(`${base}/ui/budgets`)).statusCode).toBe(401);
      const relayed = await request(`${base}/ui/budgets`, { headers: auth });
      expect(relayed.statusCode).toBe(200);
      expect(await relayed.body.json()).toEqual(counters);
      expect(budgetsAuth).toBe(`Bearer ${ADMIN_TOKEN}`);
      budgetsUp = false;
      expect((await request(`${base}/ui/budgets`, { headers: auth })).statusCode).toBe(404);
    } finally {
      live.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe("/ui with --workers", () => {
  it("shows every worker's records on the primary's admin listener (cluster IPC)", { timeout: 60_000 }, async () => {
    assertBuilt();
    const dir = tempDir("live-workers");
    const policyFile = join(dir, "policy.yaml");
    writeFileSync(
      policyFile,
      `version: 1\nca: { dir: ${JSON.stringify(join(dir, "certs"))} }\nupstream: { trust: [${JSON.stringify(pki.caFile)}] }\n` +
        `admin: { listen: "127.0.0.1:0", token: { env: PORTCULLIS_LIVE_ADMIN_TOKEN }, state: ${JSON.stringify(join(dir, "clients.json"))} }\n` +
        `clients:\n  - { name: agent, token: { env: PORTCULLIS_LIVE_SANDBOX } }\nnetwork:\n  default: allow\n  allow_ips: [127.0.0.1/32]\n`,
    );
    const running = await startCli(["--policy", policyFile, "--listen", "127.0.0.1:0", "--workers", "2"]);
    try {
      const adminLine = await running.waitForOutput(/admin on 127\.0\.0\.1:\d+/);
      const stream = await open(`http://127.0.0.1:${adminLine.split(":").at(-1)}/ui/events`, auth);
      expect(stream.response.statusCode).toBe(200);
      const paths = Array.from({ length: 8 }, (_, i) => `/ok/w${i}`);
      const exec = promisify(execFile);
      await Promise.all(
        paths.map((path) => exec("curl", ["-sS", "--cacert", join(dir, "certs", "ca.pem"), "-x", `http://agent:${SANDBOX_TOKEN}@127.0.0.1:${running.port}`, "-o", "/dev/null", `https://localhost:${upstream.port}${path}`])),
      );
      for (const path of paths) await stream.waitFor((e) => e.event === "record" && JSON.parse(e.data).path === path);
      const stats = JSON.parse((await stream.waitFor((e) => e.event === "stats" && JSON.parse(e.data).total >= 8, 10_000)).data);
      expect(stats.hosts).toContainEqual(expect.objectContaining({ name: "localhost", total: 8 }));
      running.child.kill("SIGTERM");
      expect(await running.exited).toBe(0);
    } finally {
      running.child.kill("SIGKILL");
    }
  });
});
