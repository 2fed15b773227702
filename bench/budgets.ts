// The budgets scenario of bench/run.ts (SPEC section 10): what reading LLM usage and checking a
// budget cost. Its own upstream (upstream-child.ts) and four paths: direct; portcullis with no
// rule (the bytes relayed untouched); portcullis with a `budgets:` rule in the memory store; the
// same rule in Redis (a real redis-server on a free loopback port, no persistence). Limits are
// far above what the run spends, so every request is admitted, counted and charged.
//   - time to first token: POST /v1/messages (the upstream's Anthropic-style event stream), one
//     keep-alive connection, time to the first body bytes, p50;
//   - keep-alive LLM-shaped requests/s: POST /v1/chat/completions (JSON answer with usage),
//     8 at a time on keep-alive connections.
// Also runnable alone: BENCH_QUICK=1 node --import tsx bench/budgets.ts
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { Agent, ProxyAgent, request, type Dispatcher } from "undici";
import { benchLookup, BENCH_DOMAIN, cpuSeconds, formatNumber, freePort, log, median, percentile, startChild, trackChild, withTimeout, type ChildHandle, type ChildMessage, type ProxyReady } from "./lib.js";

const LLM_HOST = `llm.${BENCH_DOMAIN}`;
type PathName = "direct" | "plain" | "memory" | "redis";
const COLUMNS: Record<PathName, string> = { direct: "direct", plain: "portcullis", memory: "portcullis + budget (memory)", redis: "portcullis + budget (Redis)" };

export interface BudgetBenchOptions {
  quick: boolean;
  rounds: number;
  /** A folder for this scenario's CAs, policies and audit logs (made if missing). */
  work: string;
}

interface Path {
  name: PathName;
  dispatcher(): Dispatcher;
  pid?: number;
}

interface Samples {
  ttft: number[];
  rps: number[];
  cpuPerRequestUs: number[];
}

const LLM_BODY = JSON.stringify({ model: "bench-model", max_tokens: 64, stream: true, messages: [{ role: "user", content: "say hi" }] });
const CHAT_BODY = JSON.stringify({ model: "bench-model", messages: [{ role: "user", content: "say hi" }] });

function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: ["ignore", "pipe", "pipe"] });
  trackChild(child);
  return new Promise((resolve, reject) => {
    let output = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Ready to accept connections")) resolve(child);
    });
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`redis-server exited (${code}): ${output.slice(-300)}`)));
  });
}

function policy(work: string, name: PathName, caFile: string, port: number, store: string | undefined): string {
  const file = join(work, `${name}.yaml`);
  const budgets = store
    ? `budgets:
  store: ${store}
  rules:
    - name: bench-budget
      hosts: ["*.${BENCH_DOMAIN}"]
      tokens: 1000000000000
      requests: 1000000000000
      window: 1d
`
    : "";
  writeFileSync(
    file,
    `version: 1
ca: { dir: ${JSON.stringify(join(work, `${name}-ca`))} }
upstream:
  trust: [${JSON.stringify(caFile)}]
  resolve: { ${JSON.stringify(LLM_HOST)}: 127.0.0.1 }
log: { audit: ${JSON.stringify(join(work, `${name}-audit.log`))}, level: warn }
network:
  default: deny
  allow_ips: [127.0.0.1/32]
  rules:
    - { name: bench, action: allow, hosts: ["*.${BENCH_DOMAIN}"], ports: [${port}] }
${budgets}`,
  );
  return file;
}

/** Time to the first body bytes of one streamed answer, and to its end. */
async function firstToken(dispatcher: Dispatcher, port: number): Promise<number> {
  const started = performance.now();
  const res = await request(`https://${LLM_HOST}:${port}/v1/messages`, { method: "POST", dispatcher, body: LLM_BODY, headers: { "content-type": "application/json" } });
  if (res.statusCode !== 200) throw new Error(`/v1/messages answered ${res.statusCode}`);
  let first = NaN;
  for await (const _chunk of res.body) if (Number.isNaN(first)) first = performance.now() - started;
  return first;
}

async function chatOnce(dispatcher: Dispatcher, port: number): Promise<void> {
  const res = await request(`https://${LLM_HOST}:${port}/v1/chat/completions`, { method: "POST", dispatcher, body: CHAT_BODY, headers: { "content-type": "application/json" } });
  const text = await res.body.text();
  if (res.statusCode !== 200 || !text.includes('"usage"')) throw new Error(`/v1/chat/completions answered ${res.statusCode}`);
}

async function measure(path: Path, port: number, p: { ttft: number; requests: number; warmup: number; concurrency: number }, into: Samples): Promise<number> {
  const streamDispatcher = path.dispatcher();
  const ttft: number[] = [];
  try {
    for (let i = 0; i < 3; i++) await firstToken(streamDispatcher, port);
    for (let i = 0; i < p.ttft; i++) ttft.push(await firstToken(streamDispatcher, port));
  } finally {
    await streamDispatcher.close();
  }
  const dispatcher = path.dispatcher();
  let sent = p.ttft + 3;
  try {
    const run = async (count: number) => {
      let next = 0;
      await Promise.all(
        Array.from({ length: p.concurrency }, async () => {
          while (next++ < count) await chatOnce(dispatcher, port);
        }),
      );
    };
    await run(p.warmup);
    const cpuBefore = cpuSeconds(path.pid);
    const started = performance.now();
    await run(p.requests);
    const seconds = (performance.now() - started) / 1000;
    into.rps.push(p.requests / seconds);
    into.cpuPerRequestUs.push(((cpuSeconds(path.pid) - cpuBefore) / p.requests) * 1e6);
    sent += p.warmup + p.requests;
  } finally {
    await dispatcher.close();
  }
  ttft.sort((a, b) => a - b);
  into.ttft.push(percentile(ttft, 50));
  return sent;
}

/** Runs the scenario; returns the report's markdown lines and what went wrong. */
export async function runBudgetBench(options: BudgetBenchOptions): Promise<{ lines: string[]; problems: string[] }> {
  const p = { ttft: options.quick ? 10 : 40, requests: options.quick ? 300 : 4000, warmup: options.quick ? 50 : 400, concurrency: 8 };
  const problems: string[] = [];
  mkdirSync(options.work, { recursive: true });
  const children: ChildHandle[] = [];
  let redis: ChildProcess | undefined;
  const samples: Record<PathName, Samples> = { direct: { ttft: [], rps: [], cpuPerRequestUs: [] }, plain: { ttft: [], rps: [], cpuPerRequestUs: [] }, memory: { ttft: [], rps: [], cpuPerRequestUs: [] }, redis: { ttft: [], rps: [], cpuPerRequestUs: [] } };
  const sent: Partial<Record<PathName, number>> = {};
  try {
    const upstream = await startChild<ChildMessage & { port: number; caFile: string; caPem: string }>("budgets upstream", "upstream-child.ts", [join(options.work, "upstream-ca"), LLM_HOST]);
    children.push(upstream);
    const { port, caFile, caPem } = upstream.ready;
    let redisUrl: string | undefined;
    try {
      const redisPort = await freePort();
      redis = await startRedis(redisPort);
      redisUrl = `redis://127.0.0.1:${redisPort}`;
    } catch (error) {
      problems.push(`budgets: redis-server could not be started (${(error as Error).message}); the Redis column is empty`);
    }
    const paths: Path[] = [{ name: "direct", dispatcher: () => new Agent({ connect: { ca: caPem, lookup: benchLookup } }) }];
    for (const [name, store] of [["plain", undefined], ["memory", "memory"], ["redis", redisUrl]] as const) {
      if (name === "redis" && !redisUrl) continue;
      const child = await startChild<ProxyReady>(`portcullis ${name}`, "portcullis-child.ts", [policy(options.work, name, caFile, port, store)]);
      children.push(child);
      paths.push({ name, pid: child.process.pid, dispatcher: () => new ProxyAgent({ uri: `http://127.0.0.1:${child.ready.port}`, requestTls: { ca: child.ready.caPem } }) });
    }
    for (let round = 0; round < options.rounds; round++) {
      for (const path of paths) {
        try {
          sent[path.name] = (sent[path.name] ?? 0) + (await withTimeout(measure(path, port, p, samples[path.name]), 60_000, `budgets ${path.name}`));
        } catch (error) {
          problems.push(`budgets, ${COLUMNS[path.name]}: ${(error as Error).message}`);
        }
      }
      log(`budgets round ${round + 1}: ${paths.map((path) => `${path.name} ${formatNumber(samples[path.name].rps.at(-1) ?? NaN)} req/s, ttft ${formatNumber(samples[path.name].ttft.at(-1) ?? NaN)} ms`).join(" | ")}`);
    }
  } finally {
    await Promise.all(children.map((child) => child.close().catch(() => null)));
    if (redis && redis.exitCode === null) {
      const exited = new Promise((resolve) => redis!.once("exit", resolve));
      redis.kill("SIGTERM");
      await exited;
    }
  }
  // Every budgeted request must have been read and written with its usage.
  for (const name of ["memory", "redis"] as const) {
    if (!sent[name]) continue;
    let withUsage = 0;
    try {
      withUsage = readFileSync(join(options.work, `${name}-audit.log`), "utf8").split("\n").filter((line) => line.includes('"llm":{')).length;
    } catch {
      // Counted as none.
    }
    if (withUsage !== sent[name]) problems.push(`budgets, ${COLUMNS[name]}: ${withUsage} audit lines with llm usage for ${sent[name]} requests`);
  }
  const m = (name: PathName, key: keyof Samples) => median(samples[name][key]);
  const plainRps = m("plain", "rps");
  const overhead = (name: PathName) => {
    const perRequestUs = (1 / m(name, "rps") - 1 / plainRps) * 1e6;
    return `${formatNumber(((plainRps - m(name, "rps")) / plainRps) * 100)} % (${formatNumber(perRequestUs)} µs a request)`;
  };
  const lines = [
    "",
    "### LLM usage and budgets (bench/budgets.ts)",
    "",
    `Median of ${options.rounds} round(s). Time to first token: POST /v1/messages (event stream), one keep-alive connection, ${p.ttft} requests a round, p50. ` +
      `Requests/s: POST /v1/chat/completions (JSON with usage), ${p.concurrency} at a time on keep-alive connections, ${p.requests} a round. ` +
      "The budget columns read every answer's usage, admit each request against the counter (atomically) and charge its tokens when it ends.",
    "",
    `| scenario | ${(Object.keys(COLUMNS) as PathName[]).map((name) => COLUMNS[name]).join(" | ")} |`,
    "| --- | ---: | ---: | ---: | ---: |",
    `| time to first token p50 (ms) | ${(Object.keys(COLUMNS) as PathName[]).map((name) => formatNumber(m(name, "ttft"))).join(" | ")} |`,
    `| keep-alive LLM requests/s | ${(Object.keys(COLUMNS) as PathName[]).map((name) => formatNumber(m(name, "rps"))).join(" | ")} |`,
    `| proxy CPU a request (µs) | – | ${(["plain", "memory", "redis"] as const).map((name) => formatNumber(m(name, "cpuPerRequestUs"))).join(" | ")} |`,
    "",
    `Time to first token added by usage parsing and the budget check (p50, memory store): ${formatNumber(m("memory", "ttft") - m("plain", "ttft"))} ms (target ≤ 1 ms). ` +
      `Requests/s lost to budgets: memory ${overhead("memory")}, Redis ${overhead("redis")} (target ≤ 15 % with Redis on loopback).`,
  ];
  return { lines, problems };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const work = mkdtempSync(join(tmpdir(), "portcullis-bench-budgets-"));
  runBudgetBench({ quick: process.env.BENCH_QUICK === "1", rounds: Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3) || 3), work })
    .then(({ lines, problems }) => {
      process.stdout.write(`${lines.join("\n")}\n`);
      if (problems.length) process.stdout.write(`\nAnomalies:\n${problems.map((problem) => `- ${problem}`).join("\n")}\n`);
      process.exitCode = problems.length ? 1 : 0;
    })
    .finally(() => rmSync(work, { recursive: true, force: true }));
}
