import { readFileSync, writeFileSync } from "node:fs";
import { once } from "node:events";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyAgent, request } from "undici";
import { assertBuilt, runCli, startCli, type RunningProxy } from "./helpers/cli.js";
import { fakeLlmHandler, PATHS, type Api, type FakeRequest } from "./helpers/fake-llm.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startRedis, type TestRedis } from "./helpers/redis.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";
import { RedisBudgetStore } from "../src/budgets/redis-store.js";
import type { Redis } from "ioredis";
import { connectRedis, firstConnection } from "../src/store/redis.js";
import { windowAt } from "../src/policy/window.js";

let pki: ServerPki;
let upstream: TestUpstream;
let redis: TestRedis;
const replicas: RunningProxy[] = [];
const agents: ProxyAgent[] = [];
let dir: string;
let policyFile: string;
let caPem: string;

beforeAll(async () => {
  assertBuilt();
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => {
    if (req.url?.startsWith("/v1/")) return fakeLlmHandler(req, res);
    req.resume();
    res.end("not an LLM");
  }, pki);
  redis = await startRedis();
  dir = tempDir("budgets-redis");
  policyFile = join(dir, "policy.yaml");
  writeFileSync(
    policyFile,
    `version: 1
ca: { dir: ${JSON.stringify(join(dir, "certs"))} }
upstream: { trust: [${JSON.stringify(pki.caFile)}], connect_timeout: 2s, response_timeout: 5s }
admin: { listen: "127.0.0.1:0" }
network:
  default: allow
  allow_ips: [127.0.0.1/32]
budgets:
  store: ${redis.url}
  rules:
    - name: shared-hourly
      hosts: [localhost]
      paths: ["/v1/**"]
      requests: 4
      tokens: 100000
      window: 1h
`,
  );
  expect(runCli(["init-ca", "--dir", join(dir, "certs")]).status).toBe(0);
  caPem = readFileSync(join(dir, "certs", "ca.pem"), "utf8");
  for (let i = 0; i < 2; i++) replicas.push(await startCli(["--policy", policyFile, "--listen", "127.0.0.1:0"]));
}, 60_000);

afterAll(async () => {
  await Promise.all(agents.map((agent) => agent.close()));
  for (const replica of replicas) replica.child.kill("SIGKILL");
  await Promise.all(replicas.map((replica) => replica.exited));
  await redis?.stop();
  await upstream?.close();
});

function through(replica: RunningProxy): ProxyAgent {
  const agent = new ProxyAgent({ uri: `http://127.0.0.1:${replica.port}`, requestTls: { ca: caPem } });
  agents.push(agent);
  return agent;
}

async function ask(agent: ProxyAgent, api: Api, body: FakeRequest, id: string) {
  const res = await request(`https://localhost:${upstream.port}${PATHS[api]}`, { method: "POST", dispatcher: agent, body: JSON.stringify(body), headers: { "content-type": "application/json", "x-request-id": id } });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

async function adminOf(replica: RunningProxy): Promise<string> {
  const line = await replica.waitForOutput(/admin on 127\.0\.0\.1:\d+/);
  return `http://127.0.0.1:${line.split(":").at(-1)}`;
}

const auditLine = (replica: RunningProxy, id: string) => replica.waitForOutput(new RegExp(`\\{[^\\n]*"req_id":"${id}"[^\\n]*\\}`), "stdout").then((text) => JSON.parse(text) as Record<string, unknown>);

const quiet = { warn: () => undefined, info: () => undefined };

/** A store on the test's Redis (`client` its own connection) and a second connection to read with (`raw`), closed after `body`. */
async function withStore(body: (connections: { store: RedisBudgetStore; client: Redis; raw: Redis }) => Promise<void>): Promise<void> {
  const connection = connectRedis(redis.url, quiet, "test");
  const store = new RedisBudgetStore(connection, () => 3_600_000);
  const raw = await connectRedis(redis.url, quiet, "test-reader");
  await firstConnection(raw); // commands are never queued: the reader must be connected before its first one
  const client = await connection;
  await firstConnection(client);
  try {
    await body({ store, client, raw });
  } finally {
    await store.close();
    raw.disconnect();
  }
}

describe("budgets in Redis, shared by replicas", () => {
  it("two portcullis processes charge and check one budget", { timeout: 60_000 }, async () => {
    const [a, b] = [through(replicas[0]!), through(replicas[1]!)];
    expect((await ask(a, "anthropic", { usage: { input: 10, output: 5 } }, "r-1")).status).toBe(200);
    expect((await ask(b, "openai-chat", { stream: true, usage: { input: 20, output: 7 } }, "r-2")).status).toBe(200);
    expect((await ask(a, "openai-responses", { usage: { input: 1, output: 1 } }, "r-3")).status).toBe(200);
    expect((await ask(b, "anthropic", { usage: { input: 1, output: 1 } }, "r-4")).status).toBe(200);
    // Four requests between the two replicas spend the budget of four: either one refuses the fifth.
    for (const [agent, id] of [[a, "r-5a"], [b, "r-5b"]] as const) {
      const refused = await ask(agent, "anthropic", {}, id);
      expect(refused.status).toBe(429);
      expect(JSON.parse(refused.body)).toMatchObject({ type: "error", error: { type: "budget_exceeded", rule: "shared-hourly" } });
      // An answer portcullis makes itself says why in its headers too (SPEC section 12).
      expect(refused.headers).toMatchObject({ "x-portcullis-error": "budget_exceeded", "x-portcullis-reason": expect.stringContaining("budget shared-hourly is spent") });
    }
    expect(await auditLine(replicas[1]!, "r-5b")).toMatchObject({ msg: "denied", rule: "shared-hourly", status: 429 });
    expect(await auditLine(replicas[1]!, "r-2")).toMatchObject({ llm: { api: "openai-chat", model: "gpt-x", input_tokens: 20, output_tokens: 7 } });

    // Both replicas read the same counters from Redis.
    for (const replica of replicas) {
      const rows = (await (await request(`${await adminOf(replica)}/budgets`)).body.json()) as Record<string, unknown>[];
      expect(rows).toEqual([expect.objectContaining({ rule: "shared-hourly", client: null, tokens: 15 + 27 + 2 + 2, requests: 4, limit_tokens: 100000, limit_requests: 4 })]);
    }
    const explained = runCli(["explain", "--policy", policyFile, "POST", `https://localhost:${upstream.port}/v1/messages`]);
    expect(explained.status).toBe(3);
    const explanation = JSON.parse(explained.stdout) as { decision: string; rule: string; budgets: Record<string, unknown>[] };
    expect(explanation).toMatchObject({ decision: "deny", rule: "shared-hourly" });
    expect(explanation.budgets).toEqual([expect.objectContaining({ rule: "shared-hourly", tokens: 46, requests: 4, spent: true })]);
  });

  it("Redis killed: budgeted requests get 503 budget_unavailable, other traffic flows, one diagnostic line per outage, recovery when it returns", { timeout: 60_000 }, async () => {
    const replica = replicas[0]!;
    const agent = through(replica);
    const admin = await adminOf(replica);
    await redis.kill();
    for (let i = 0; i < 5; i++) {
      const refused = await ask(agent, "anthropic", {}, `down-${i}`);
      expect(refused.status).toBe(503);
      expect(refused.headers["x-portcullis-error"]).toBe("budget_unavailable");
      expect(JSON.parse(refused.body).error).toMatchObject({ type: "budget_unavailable", rule: "shared-hourly" });
    }
    expect(await auditLine(replica, "down-4")).toMatchObject({ status: 503, error: { type: "budget_unavailable" } });
    // Not under a budget: unaffected.
    const other = await request(`https://localhost:${upstream.port}/elsewhere`, { dispatcher: agent });
    expect(other.statusCode).toBe(200);
    expect(await other.body.text()).toBe("not an LLM");
    expect((await request(`${admin}/budgets`)).statusCode).toBe(503);
    // The outage is reported when the client's first reconnection attempt fails, not per request.
    await replica.waitForOutput(/cannot be reached/);
    expect(replica.stderr().match(/cannot be reached/g)).toHaveLength(1);

    await redis.restart();
    await replica.waitForOutput(/Redis at redis:\/\/127\.0\.0\.1:\d+ is reachable again/);
    // A fresh Redis (nothing persisted) has fresh counters.
    const back = await ask(agent, "openai-chat", { usage: { input: 3, output: 4 } }, "back-1");
    expect(back.status).toBe(200);
    const rows = (await (await request(`${admin}/budgets`)).body.json()) as Record<string, unknown>[];
    expect(rows).toEqual([expect.objectContaining({ rule: "shared-hourly", requests: 1 })]);
    expect(replica.stderr().match(/cannot be reached/g)).toHaveLength(1);
  });

  it("the store: one turn's charges and admissions go out as one script call, charges summed per counter, admissions judged in order", async () => {
    await withStore(async ({ store, raw }) => {
      const scriptCalls = async () => {
        const stats = await raw.info("commandstats");
        return [...stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)].reduce((sum, match) => sum + Number(match[1]), 0);
      };
      const hour = windowAt(Date.now(), 3_600_000);
      const key = (client: string) => ({ rule: "batched", client, windowStart: hour.start, windowEnd: hour.end });
      await store.charge([key("warm")], 1); // the script is loaded: EVAL once, EVALSHA after
      await raw.config("RESETSTAT");
      const first = store.charge([key("a")], 5);
      await new Promise((resolve) => setImmediate(resolve)); // the first turn's call is on its way
      const rest = Array.from({ length: 20 }, (_, i) => store.charge([key(i % 2 ? "a" : "b"), key("c")], i + 1));
      const limited = { ...key("limited"), limitRequests: 3 };
      const admissions = Array.from({ length: 5 }, () => store.admit([key("d"), limited]));
      const [results] = await Promise.all([Promise.all(admissions), first, ...rest]);
      expect(await scriptCalls()).toBe(2);
      // In the order asked for, each as if alone: three counted, then the limit holds, and the
      // refused ones counted nothing, on either counter.
      expect(results.map((result) => result.ok)).toEqual([true, true, true, false, false]);
      expect(results[3]).toMatchObject({ ok: false, spent: { client: "limited" }, counter: { client: "limited", requests: 3, tokens: 0 } });
      const hash = async (client: string) => raw.hgetall((await raw.keys(`portcullis:budget:*:batched:${client}`))[0]!);
      expect(await hash("d")).toEqual({ r: "3" });
      const tokens = async (client: string) => Number((await hash(client)).t ?? 0);
      const sum = (odd: boolean) => Array.from({ length: 20 }, (_, i) => i + 1).filter((n) => (n % 2 === 0) === odd).reduce((a, b) => a + b, 0);
      expect(await tokens("a")).toBe(5 + sum(true));
      expect(await tokens("b")).toBe(sum(false));
      expect(await tokens("c")).toBe(210);
      // A count that is not a whole number (an upstream's) is rounded, and the others of its call still count.
      await Promise.all([store.charge([key("f")], 7), store.charge([key("f"), key("g")], 1.5), store.charge([key("g")], 9)]);
      expect([await tokens("f"), await tokens("g")]).toEqual([9, 11]);
      // A counter at Redis' integer limit loses that charge, not the rest of its call.
      const full = `portcullis:budget:${hour.start}:batched:full`;
      await raw.hset(full, "t", "9223372036854775000");
      const [, , beside] = await Promise.all([store.charge([key("full")], 10_000), store.charge([key("h")], 4), store.admit([key("h")])]);
      expect(beside).toEqual({ ok: true });
      expect(await hash("h")).toEqual({ t: "4", r: "1" });
      expect(await raw.hget(full, "t")).toBe("9223372036854775000");
      const charged = (await raw.keys("portcullis:budget:*:batched:a"))[0]!;
      expect(await raw.expiretime(charged)).toBe(Math.ceil(hour.end / 1000));
      expect(await raw.expiretime((await raw.keys("portcullis:budget:*:batched:limited"))[0]!)).toBe(Math.ceil(hour.end / 1000));
    });
  });

  it("the store: Redis out of memory refuses a turn's admissions with the charges that ride along (fail closed, nothing counted)", async () => {
    await withStore(async ({ store, raw }) => {
      const hour = windowAt(Date.now(), 3_600_000);
      const counter = { rule: "oom", client: "c", windowStart: hour.start, windowEnd: hour.end };
      const limited = { ...counter, limitTokens: 1000 };
      try {
        await store.charge([counter], 10);
        await raw.config("SET", "maxmemory", "1"); // every write that could grow memory is refused (noeviction)
        await expect(store.admit([limited])).rejects.toThrow(/budget store \(Redis\) cannot be reached: OOM/);
        // A charge in the same turn must not let the admission through uncharged.
        const [charged, admitted] = await Promise.allSettled([store.charge([counter], 5000), store.admit([limited])]);
        expect(charged.status).toBe("rejected");
        expect(admitted).toMatchObject({ status: "rejected", reason: { name: "BudgetStoreUnavailable" } });
        expect(await raw.hgetall((await raw.keys("portcullis:budget:*:oom:c"))[0]!)).toEqual({ t: "10" });
      } finally {
        await raw.config("SET", "maxmemory", "0");
      }
    });
  });

  it("the store: charges made while Redis is down are held and sent once it is back; admissions are refused, not held", { timeout: 30_000 }, async () => {
    await withStore(async ({ store, client }) => {
      const hour = windowAt(Date.now(), 3_600_000);
      const key = (name: string) => ({ rule: "outage", client: name, windowStart: hour.start, windowEnd: hour.end });
      // Read on the store's own connection, so after every call the store sent before.
      const hash = async (name: string) => {
        const found = (await client.keys(`portcullis:budget:*:outage:${name}`))[0];
        return found ? client.hgetall(found) : undefined;
      };
      const backAgain = async () => {
        if (client.status !== "ready") await once(client, "ready");
        await new Promise((resolve) => setImmediate(resolve)); // the store's flush at "ready" is sent
      };
      await store.charge([key("held")], 1);
      // The start of an outage: the socket has ended, the status still says ready.
      client.stream.end();
      await expect(store.charge([key("ending")], 3)).rejects.toThrow(/budget store \(Redis\) cannot be reached: the connection is closing/);
      await once(client, "close");
      await backAgain();
      expect(await hash("ending")).toEqual({ t: "3" });

      await redis.kill();
      if (client.status === "ready") await once(client, "close");
      await expect(store.charge([key("held")], 7)).rejects.toThrow(/budget store \(Redis\) cannot be reached: the connection is/);
      const [charged, admitted] = await Promise.allSettled([store.charge([key("held"), key("second")], 5), store.admit([{ ...key("refused"), limitRequests: 10 }])]);
      expect(charged.status).toBe("rejected");
      expect(admitted).toMatchObject({ status: "rejected", reason: { name: "BudgetStoreUnavailable" } });
      // Counters of windows that have ended are not held, so they cannot take a live one's place.
      const ended = Array.from({ length: 10_000 }, (_, i) => ({ rule: "outage", client: `old-${i}`, windowStart: hour.start - 3_600_000, windowEnd: hour.start }));
      await expect(store.charge(ended, 1)).rejects.toThrow(/cannot be reached/);
      await expect(store.charge([key("late")], 2)).rejects.toThrow(/cannot be reached/);
      await redis.restart();
      await backAgain();
      // The restarted Redis is empty: the 1 charged before the outage went with it; 7 + 5 did not.
      expect(await hash("held")).toEqual({ t: "12" });
      expect(await hash("second")).toEqual({ t: "5" });
      expect(await hash("late")).toEqual({ t: "2" });
      expect(await hash("refused")).toBeUndefined();
      expect(await client.keys("portcullis:budget:*:outage:old-*")).toEqual([]);
    });
  });

  it("the store: a turn too large for one call goes out as several, in order, and a request limit stays exact across them", async () => {
    await withStore(async ({ store, raw }) => {
      const scriptCalls = async () => Number((await raw.info("commandstats")).match(/^cmdstat_evalsha:calls=(\d+)/m)?.[1] ?? 0);
      const hour = windowAt(Date.now(), 3_600_000);
      const counters = Array.from({ length: 5 }, (_, i) => ({ rule: `many-${i}`, client: "c", windowStart: hour.start, windowEnd: hour.end }));
      const checks = [...counters.slice(0, 4), { ...counters[4]!, limitRequests: 5500 }];
      await store.admit([counters[0]!]); // the script is loaded: EVAL once, EVALSHA after
      await raw.config("RESETSTAT");
      // 6,000 admissions of five counters: over 120,000 arguments, more than one spread can pass.
      const results = await Promise.all(Array.from({ length: 6000 }, () => store.admit(checks)));
      const admitted = results.map((result) => result.ok);
      expect(admitted.indexOf(false)).toBe(5500);
      expect(admitted.lastIndexOf(true)).toBe(5499);
      expect(await scriptCalls()).toBeGreaterThan(1);
      expect(await raw.hget((await raw.keys("portcullis:budget:*:many-4:c"))[0]!, "r")).toBe("5500");
      expect(await raw.hget((await raw.keys("portcullis:budget:*:many-0:c"))[0]!, "r")).toBe("5501");
    });
  });

  it("the store: concurrent admissions never pass a request limit, a spent counter is peeked without counting, keys expire at the window's end", async () => {
    await withStore(async ({ store, raw }) => {
      const hour = windowAt(Date.now(), 3_600_000);
      const check = { rule: "unit", client: "c:1", windowStart: hour.start, windowEnd: hour.end, limitRequests: 10 };
      const results = await Promise.all(Array.from({ length: 30 }, () => store.admit([check])));
      expect(results.filter((r) => r.ok)).toHaveLength(10);
      expect(await store.peek([check])).toMatchObject({ rule: "unit" });
      await store.charge([check], 42);
      const key = (await raw.keys("portcullis:budget:*")).find((k) => k.includes("unit"))!;
      expect(await raw.hgetall(key)).toEqual({ r: "10", t: "42" });
      expect(await raw.expiretime(key)).toBe(Math.ceil(hour.end / 1000));
      expect((await store.counters()).find((c) => c.rule === "unit")).toMatchObject({ client: "c:1", tokens: 42, requests: 10, windowEnd: hour.end });
    });
  });
});
