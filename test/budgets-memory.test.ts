import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyAgent, request } from "undici";
import { MemoryBudgetStore } from "../src/budgets/memory-store.js";
import { StateFile } from "../src/budgets/state-file.js";
import { windowAt } from "../src/policy/window.js";
import { assertBuilt, runCli, startCli, type RunningProxy } from "./helpers/cli.js";
import { fakeLlmHandler, PATHS, type Api, type FakeRequest } from "./helpers/fake-llm.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let upstream: TestUpstream;
const running: RunningProxy[] = [];
const agents: ProxyAgent[] = [];
/** One CA for every proxy of this file (making one is the slow part of a start). */
let caDir: string;

beforeAll(async () => {
  assertBuilt();
  pki = await makeUpstreamPki();
  upstream = await startUpstream(fakeLlmHandler, pki);
  caDir = join(tempDir("budgets-ca"), "certs");
  expect(runCli(["init-ca", "--dir", caDir]).status).toBe(0);
});

afterAll(async () => {
  await Promise.all(agents.map((agent) => agent.close()));
  for (const proxy of running) proxy.child.kill("SIGKILL");
  await Promise.all(running.map((proxy) => proxy.exited));
  await upstream?.close();
});

function policyIn(dir: string, budget: string): string {
  const file = join(dir, "policy.yaml");
  writeFileSync(
    file,
    `version: 1
ca: { dir: ${JSON.stringify(caDir)} }
upstream: { trust: [${JSON.stringify(pki.caFile)}] }
admin: { listen: "127.0.0.1:0" }
network:
  default: allow
  allow_ips: [127.0.0.1/32]
budgets:
${budget}`,
  );
  return file;
}

function through(proxy: RunningProxy): ProxyAgent {
  // A new connection per request, so cluster spreads them over the workers.
  const agent = new ProxyAgent({ uri: `http://127.0.0.1:${proxy.port}`, requestTls: { ca: readFileSync(join(caDir, "ca.pem"), "utf8") }, pipelining: 0 });
  agents.push(agent);
  return agent;
}

async function ask(agent: ProxyAgent, api: Api, body: FakeRequest) {
  const res = await request(`https://localhost:${upstream.port}${PATHS[api]}`, { method: "POST", dispatcher: agent, body: JSON.stringify(body), headers: { "content-type": "application/json", connection: "close" } });
  await res.body.text();
  return res.statusCode;
}

async function budgetsOf(proxy: RunningProxy): Promise<Record<string, unknown>[]> {
  const line = await proxy.waitForOutput(/admin on 127\.0\.0\.1:\d+/);
  return (await (await request(`http://127.0.0.1:${line.split(":").at(-1)}/budgets`)).body.json()) as Record<string, unknown>[];
}

describe("memory store", () => {
  it("--workers 2 share one budget through the primary", { timeout: 60_000 }, async () => {
    const dir = tempDir("budgets-workers");
    const file = policyIn(dir, `  rules:\n    - { name: shared, hosts: [localhost], requests: 6, window: 1d }\n`);
    const proxy = await startCli(["--policy", file, "--listen", "127.0.0.1:0", "--workers", "2"]);
    running.push(proxy);
    const agent = through(proxy);
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push(await ask(agent, "openai-chat", { usage: { input: 10, output: 1 } }));
    // However the requests were spread over the two workers, six pass and the rest are refused.
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 429, 429]);
    const rows = await budgetsOf(proxy);
    const day = windowAt(Date.now(), 86_400_000).start;
    expect(rows).toEqual([{ rule: "shared", client: null, window_start: new Date(day).toISOString(), tokens: 66, requests: 6, limit_tokens: null, limit_requests: 6 }]);
  });

  it("counts a request whose path any server reads as one of the budget's paths", { timeout: 60_000 }, async () => {
    const dir = tempDir("budgets-paths");
    const proxy = await startCli(["--policy", policyIn(dir, `  rules:\n    - { name: v1, hosts: [localhost], paths: ["/v1/**"], requests: 1, window: 1d }\n`), "--listen", "127.0.0.1:0"]);
    running.push(proxy);
    const agent = through(proxy);
    expect(await ask(agent, "anthropic", { usage: { input: 1, output: 1 } })).toBe(200);
    // Tomcat and Spring drop ";x": this is /v1/messages to them, and the budget is spent.
    for (const path of ["/v1;x/messages", "/v1/messages;x", "/v1/./messages"]) {
      const res = await request(`https://localhost:${upstream.port}${path}`, { method: "POST", dispatcher: agent, body: "{}", headers: { "content-type": "application/json", connection: "close" } });
      await res.body.text();
      expect(res.statusCode, path).toBe(429);
    }
  });

  it("keeps its counters across a restart in state_file", { timeout: 60_000 }, async () => {
    const dir = tempDir("budgets-state");
    const file = policyIn(dir, `  state_file: ${JSON.stringify(join(dir, "counters.json"))}\n  rules:\n    - { name: daily, hosts: [localhost], tokens: 50, window: 1d }\n`);
    const first = await startCli(["--policy", file, "--listen", "127.0.0.1:0"]);
    running.push(first);
    const agent = through(first);
    expect(await ask(agent, "anthropic", { usage: { input: 20, output: 10 } })).toBe(200);
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);
    // Written whole at shutdown.
    const saved = JSON.parse(readFileSync(join(dir, "counters.json"), "utf8")) as { counters: { tokens: number; requests: number }[] };
    expect(saved.counters).toEqual([expect.objectContaining({ rule: "daily", tokens: 30, requests: 1 })]);

    const second = await startCli(["--policy", file, "--listen", "127.0.0.1:0"]);
    running.push(second);
    const again = through(second);
    expect(await ask(again, "anthropic", { usage: { input: 20, output: 10 } })).toBe(200);
    // 60 of 50 tokens: spent.
    expect(await ask(again, "anthropic", {})).toBe(429);
    expect(await budgetsOf(second)).toEqual([expect.objectContaining({ rule: "daily", tokens: 60, requests: 2, limit_tokens: 50 })]);
    const explained = runCli(["explain", "--policy", file, "POST", `https://localhost:${upstream.port}/v1/messages`]);
    // The running proxy writes the file at most once a second; explain reads what is there.
    expect(explained.status === 0 || explained.status === 3).toBe(true);
    expect((JSON.parse(explained.stdout) as { budgets: unknown[] }).budgets).toEqual([expect.objectContaining({ rule: "daily", limit_tokens: 50 })]);
  });

  it("writes the state file at a bounded rate, atomically, and drops ended windows when it loads", async () => {
    const dir = tempDir("budgets-state-unit");
    const path = join(dir, "state.json");
    let now = Date.UTC(2026, 0, 1, 10, 30);
    const warnings: string[] = [];
    const store = new MemoryBudgetStore(new StateFile(path, (w) => warnings.push(w), () => now), () => now);
    const hour = windowAt(now, 3_600_000);
    const key = { rule: "r", client: "c", windowStart: hour.start, windowEnd: hour.end };
    for (let i = 0; i < 100; i++) store.admitNow([{ ...key, limitRequests: 1000 }]);
    store.chargeNow([key], 500);
    // Nothing written synchronously per request; one write after the interval.
    expect(existsSync(path)).toBe(false);
    await store.close();
    expect(JSON.parse(readFileSync(path, "utf8")).counters).toEqual([{ ...key, tokens: 500, requests: 100 }]);
    expect(new MemoryBudgetStore(new StateFile(path, () => undefined, () => now), () => now).snapshot()).toHaveLength(1);
    now = hour.end;
    expect(new MemoryBudgetStore(new StateFile(path, () => undefined, () => now), () => now).snapshot()).toHaveLength(0);
    writeFileSync(path, "{broken");
    new MemoryBudgetStore(new StateFile(path, (w) => warnings.push(w), () => now), () => now);
    expect(warnings.join("\n")).toContain("not valid JSON");
  });

  it("admits atomically: a spent counter refuses without counting, windows align to UTC", () => {
    const now = Date.UTC(2026, 5, 3, 23, 59, 59);
    const store = new MemoryBudgetStore(undefined, () => now);
    const day = windowAt(now, 86_400_000);
    expect(new Date(day.start).toISOString()).toBe("2026-06-03T00:00:00.000Z");
    const a = { rule: "a", client: "x", windowStart: day.start, windowEnd: day.end, limitRequests: 2 };
    const b = { rule: "b", client: "x", windowStart: day.start, windowEnd: day.end, limitTokens: 10 };
    expect(store.admitNow([a, b]).ok).toBe(true);
    store.chargeNow([a, b], 10);
    const refused = store.admitNow([a, b]);
    expect(refused).toMatchObject({ ok: false, spent: { rule: "b" } });
    // The refused request counted on neither.
    expect(store.snapshot().map((c) => c.requests)).toEqual([1, 1]);
  });
});
