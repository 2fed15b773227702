import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { request } from "undici";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { startWsUpstream, type TestWsUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let upstream: TestWsUpstream;
let proxy: TestProxy;
let admin: string;
let release!: () => void;
const held = new Promise<void>((resolve) => (release = resolve));

const network = (port: number) =>
  `network:\n  default: deny\n  allow_ips: [127.0.0.1/32]\n  rules:\n    - { name: local, action: allow, hosts: [localhost], ports: [${port}], paths: ["/ok/**", "/ws"] }\n    - { name: dead, action: allow, hosts: [localhost] , ports: [1] }\n`;

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startWsUpstream(pki);
  upstream.server.removeAllListeners("request");
  upstream.server.on("request", (req, res) => {
    req.resume();
    if (req.url === "/ok/hold") {
      res.write("held ");
      void held.then(() => res.end("released"));
      return;
    }
    res.end("ok");
  });
  proxy = await startProxy(policyTrusting(pki.caFile, "", network(upstream.port)), { adminListen: "127.0.0.1:0" });
  admin = `http://127.0.0.1:${proxy.proxy.adminAddress!.port}`;
});

afterAll(async () => {
  release();
  await proxy?.close();
  await upstream?.close();
});

async function scrape(): Promise<string> {
  const res = await request(`${admin}/metrics`);
  expect(res.statusCode).toBe(200);
  expect(res.headers["content-type"]).toContain("text/plain");
  return res.body.text();
}

function value(metrics: string, series: string): number {
  const line = metrics.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

describe("admin listener", () => {
  it("answers /budgets with 404 and the reason when the policy has no budgets", async () => {
    const res = await request(`${admin}/budgets`);
    expect(res.statusCode).toBe(404);
    expect(await res.body.json()).toEqual({ error: { type: "not_found", message: "no budgets are configured (budgets.rules is empty)" } });
  });

  it("answers /healthz and /readyz", async () => {
    const health = await request(`${admin}/healthz`);
    expect(health.statusCode).toBe(200);
    expect(await health.body.json()).toEqual({ status: "ok" });
    const ready = await request(`${admin}/readyz`);
    expect(ready.statusCode).toBe(200);
    expect(await ready.body.json()).toMatchObject({ ready: true, ca: true, draining: false });
    expect((await request(`${admin}/nope`)).statusCode).toBe(404);
  });

  it("counts known traffic in /metrics: decisions, status classes, hosts, durations, errors, tunnels, WebSockets, certificates", async () => {
    for (let i = 0; i < 3; i++) await (await request(`https://localhost:${upstream.port}/ok/${i}`, { dispatcher: proxy.dispatcher })).body.text();
    await (await request(`https://localhost:${upstream.port}/denied`, { dispatcher: proxy.dispatcher })).body.text();
    await (await request(`https://localhost:1/x`, { dispatcher: proxy.dispatcher })).body.text();

    const ws = new WebSocket(`wss://localhost:${upstream.port}/ws`, { agent: proxy.agent(), ca: proxy.caPem });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const during = await scrape();
    expect(value(during, "portcullis_open_websockets")).toBe(1);
    expect(value(during, "portcullis_open_tunnels")).toBeGreaterThanOrEqual(1);
    ws.close();
    await proxy.audit.waitFor((l) => l.msg === "websocket");

    const metrics = await scrape();
    expect(value(metrics, 'portcullis_requests_total{decision="allow",status_class="2xx",host="localhost",kind="http",http_version="1.1"}')).toBe(3);
    expect(value(metrics, 'portcullis_requests_total{decision="deny",status_class="4xx",host="_denied",kind="denied",http_version="1.1"}')).toBe(1);
    expect(value(metrics, 'portcullis_requests_total{decision="allow",status_class="5xx",host="localhost",kind="http",http_version="1.1"}')).toBe(1);
    expect(value(metrics, 'portcullis_requests_total{decision="allow",status_class="1xx",host="localhost",kind="websocket",http_version="1.1"}')).toBe(1);
    expect(value(metrics, 'portcullis_upstream_errors_total{type="upstream_unreachable"}')).toBe(1);
    expect(value(metrics, 'portcullis_request_duration_seconds_count{decision="allow",status_class="2xx",kind="http"}')).toBe(3);
    expect(value(metrics, "portcullis_open_websockets")).toBe(0);
    expect(value(metrics, 'portcullis_certificate_cache{event="forged"}')).toBe(1);
    expect(value(metrics, 'portcullis_certificate_cache{event="miss"}')).toBeGreaterThanOrEqual(1);
    // Every metric carries the prefix exactly once (the default process_/nodejs_ ones too).
    const names = [...new Set([...metrics.matchAll(/^# TYPE (\S+) /gm)].map((match) => match[1]!))];
    expect(names).toContain("portcullis_process_cpu_seconds_total");
    expect(names).toContain("portcullis_nodejs_heap_size_used_bytes");
    for (const name of names) expect(name).toMatch(/^portcullis_(?!.*portcullis_)(?!process_process_)/);
  });

  it("counts reloads by result and reports the last one in /readyz", async () => {
    const dir = tempDir("admin-reload");
    const good = join(dir, "good.yaml");
    const bad = join(dir, "bad.yaml");
    writeFileSync(good, `${policyTrusting(pki.caFile, "", network(upstream.port))}ca: { dir: ${JSON.stringify(proxy.caDir)} }\n`);
    writeFileSync(bad, "version: 1\nnetwork: { default: sometimes }\n");
    expect(await proxy.proxy.reloadFromFile(good, "test")).toBe(true);
    expect(await proxy.proxy.reloadFromFile(bad, "test")).toBe(false);
    const metrics = await scrape();
    expect(value(metrics, 'portcullis_policy_reloads_total{result="success"}')).toBe(1);
    expect(value(metrics, 'portcullis_policy_reloads_total{result="failure"}')).toBe(1);
    const ready = (await (await request(`${admin}/readyz`)).body.json()) as { ready: boolean; policy: string; last_reload: { ok: boolean; errors: string[] } };
    expect(ready.ready).toBe(true);
    expect(ready.policy).toBe(good);
    expect(ready.last_reload.ok).toBe(false);
    expect(ready.last_reload.errors[0]).toMatch(/bad\.yaml:2:\d+: network\.default/);
  });

  it("warns when it listens beyond loopback without admin.token, and only then", async () => {
    process.env.PCX_ADMIN_TEST_TOKEN = "admin-token-for-the-test-3b9f";
    const warning = (proxy: TestProxy) => proxy.diagnostics.lines.find((line) => String(line.msg).startsWith("the admin listener is not on loopback"));
    const open = await startProxy(policyTrusting(pki.caFile), { adminListen: "0.0.0.0:0" });
    const guarded = await startProxy(policyTrusting(pki.caFile, "admin: { token: { env: PCX_ADMIN_TEST_TOKEN } }\n"), { adminListen: "0.0.0.0:0" });
    const local = await startProxy(policyTrusting(pki.caFile), { adminListen: "127.0.0.1:0" });
    try {
      expect(warning(open)).toMatchObject({ level: 40 });
      expect(warning(guarded)).toBeUndefined();
      expect(warning(local)).toBeUndefined();
    } finally {
      for (const proxy of [open, guarded, local]) await proxy.close();
    }
  });

  it("reports not ready while draining", async () => {
    const closing = await startProxy(policyTrusting(pki.caFile), { adminListen: "127.0.0.1:0" });
    const url = `http://127.0.0.1:${closing.proxy.adminAddress!.port}/readyz`;
    // A response in flight keeps the drain (and the admin listener) going.
    const res = await request(`https://localhost:${upstream.port}/ok/hold`, { dispatcher: closing.dispatcher });
    const body = res.body.text();
    const done = closing.proxy.close({ graceMs: 10_000 });
    const during = await request(url);
    expect(during.statusCode).toBe(503);
    expect(await during.body.json()).toMatchObject({ ready: false, draining: true });
    release();
    expect(await body).toBe("held released");
    await done;
    await closing.dispatcher.close();
  });
});
