// portcullis benchmark: direct HTTPS vs. portcullis vs. http-mitm-proxy, on 127.0.0.1 only.
//
//   make bench                      (= npm run build, then node --import tsx bench/run.ts)
//   BENCH_ROUNDS=1 BENCH_QUICK=1 node --import tsx bench/run.ts     (smoke run, a few seconds)
//
// portcullis is measured as built: every portcullis process runs dist/ (run `npm run build`
// first; make bench does). The upstream, portcullis and http-mitm-proxy each run in a child
// process of their own, so each has its own event loop as in production; this process is only
// the client. Two more portcullis instances are started through the CLI (`start --workers 1`
// and `--workers 2`), and one with an `llm:` rule for the streaming scenario. Every loop is
// bounded, every scenario has a deadline, and every server and child is closed at the end.
// Progress goes to stderr; the results (markdown tables) go to stdout.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import https from "node:https";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { StringDecoder } from "node:string_decoder";
import { fileURLToPath } from "node:url";
import { HttpsProxyAgent } from "https-proxy-agent";
import { Agent, ProxyAgent, type Dispatcher } from "undici";
import WebSocket from "ws";
import {
  benchLookup,
  BENCH_DOMAIN,
  formatNumber,
  formatRatio,
  killAllChildren,
  log,
  median,
  percentile,
  startChild,
  trackChild,
  withTimeout,
  type ChildHandle,
  type ChildMessage,
} from "./lib.js";

// ---------------------------------------------------------------------------------------------
// The build under test. dist/ is imported dynamically so that a missing build is a clear message.

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DIST_INDEX = join(ROOT, "dist", "index.js");
const CLI = join(ROOT, "dist", "cli.js");

/** The newest .ts file under src/ when it is newer than dist/index.js (a build that may not have every edit). */
function staleSource(): string | undefined {
  const built = statSync(DIST_INDEX).mtimeMs;
  let newest: { file: string; mtime: number } | undefined;
  const walk = (dir: string, depth: number) => {
    if (depth > 6) return;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path, depth + 1);
      else if (entry.name.endsWith(".ts")) {
        const mtime = statSync(path).mtimeMs;
        if (!newest || mtime > newest.mtime) newest = { file: path, mtime };
      }
    }
  };
  walk(join(ROOT, "src"), 0);
  return newest && newest.mtime > built ? newest.file.slice(ROOT.length) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Parameters.

const QUICK = process.env.BENCH_QUICK === "1";
const ROUNDS = Math.max(1, Math.min(9, Number(process.env.BENCH_ROUNDS ?? 5) || 5));
const P = {
  keepAlive: { concurrency: 8, requests: QUICK ? 800 : 10_000, warmup: QUICK ? 100 : 1000 },
  tunnels: { concurrency: 8, requests: QUICK ? 60 : 600, warmup: QUICK ? 8 : 48 },
  download: { bytes: (QUICK ? 16 : 100) * 1024 * 1024, warmupBytes: 16 * 1024 * 1024 },
  ws: { messages: QUICK ? 2000 : 100_000, size: 64, window: 32, warmup: QUICK ? 500 : 5000 },
  firstSeen: { hosts: QUICK ? 3 : 8 },
  /** Per round, on one warm keep-alive connection; the table pools every round's samples. */
  ttft: { requests: QUICK ? 10 : 40, warmup: QUICK ? 3 : 5 },
};
const SCENARIO_TIMEOUT_MS = 60_000;
const WATCHDOG_MS = 300_000;
/** The streaming scenario's host: under the llm rule's `*.bench.test`, not used elsewhere. */
const LLM_HOST = `llm.${BENCH_DOMAIN}`;
const LLM_REQUEST = JSON.stringify({
  model: "bench-model",
  max_tokens: 64,
  stream: true,
  messages: [{ role: "user", content: "say hi" }],
});

/**
 * direct, portcullis (portcullis-child.ts) and mitm: the main table. workers1 / workers2: the
 * CLI, `portcullis start --workers 1|2`. llm: portcullis with an `llm:` rule (the SSE guard).
 */
type TargetName = "direct" | "portcullis" | "mitm" | "workers1" | "workers2" | "llm";
const TARGETS: TargetName[] = ["direct", "portcullis", "mitm"];
const ALL_TARGETS: TargetName[] = ["direct", "portcullis", "mitm", "workers1", "workers2", "llm"];
const COLUMN: Record<TargetName, string> = {
  direct: "direct",
  portcullis: "portcullis",
  mitm: "http-mitm-proxy",
  workers1: "CLI --workers 1",
  workers2: "CLI --workers 2",
  llm: "portcullis+llm",
};

interface Target {
  name: TargetName;
  /** http://127.0.0.1:PORT of the proxy; none for direct. */
  proxyUrl?: string;
  /** The CA the client trusts for the TLS session it sees (upstream's for direct, else the proxy's). */
  ca: string;
}

type Metric =
  | "ka_rps"
  | "ka_p50"
  | "ka_p99"
  | "tun_rps"
  | "tun_p50"
  | "dl_mbps"
  | "ws_mps"
  | "fs_first"
  | "fs_repeat"
  | "fs_added"
  | "ttft_p50"
  | "ttft_p90"
  | "stream_p50";

const ROWS: { metric: Metric; label: string; ratios: boolean }[] = [
  { metric: "ka_rps", label: `small GET, keep-alive, ${P.keepAlive.concurrency} conns, ${P.keepAlive.requests} req — req/s ↑`, ratios: true },
  { metric: "ka_p50", label: "  ″ latency p50 — ms ↓", ratios: true },
  { metric: "ka_p99", label: "  ″ latency p99 — ms ↓", ratios: true },
  { metric: "tun_rps", label: `new tunnel + full TLS handshake per request, ${P.tunnels.concurrency} conc, ${P.tunnels.requests} req — tunnels/s ↑`, ratios: true },
  { metric: "tun_p50", label: "  ″ latency p50 — ms ↓", ratios: true },
  { metric: "dl_mbps", label: `${P.download.bytes / 1024 / 1024} MiB download, one connection — MB/s ↑`, ratios: true },
  { metric: "ws_mps", label: `WebSocket echo, ${P.ws.size} B, ${P.ws.window} in flight, ${P.ws.messages} msgs — msgs/s ↑`, ratios: true },
  { metric: "fs_first", label: "first request to a never-seen host (new tunnel) — ms ↓", ratios: true },
  { metric: "fs_repeat", label: "  ″ same host again (new tunnel, cached cert) — ms ↓", ratios: true },
  { metric: "fs_added", label: "first-seen host: added cost — ms ↓", ratios: false },
];

const WORKER_ROWS: { metric: Metric; label: string }[] = [
  { metric: "ka_rps", label: `small GET, keep-alive, ${P.keepAlive.concurrency} conns, ${P.keepAlive.requests} req — req/s ↑` },
  { metric: "ka_p50", label: "  ″ latency p50 — ms ↓" },
  { metric: "tun_rps", label: `new tunnel + full TLS handshake per request, ${P.tunnels.concurrency} conc, ${P.tunnels.requests} req — tunnels/s ↑` },
  { metric: "tun_p50", label: "  ″ latency p50 — ms ↓" },
];

const results = Object.fromEntries(ALL_TARGETS.map((name) => [name, {}])) as Record<TargetName, Partial<Record<Metric, number[]>>>;
/** Every measured time-to-first-text-token (ms) and whole-stream time, all rounds pooled. */
const ttftSamples: Partial<Record<TargetName, { first: number[]; whole: number[] }>> = {};
const anomalies: string[] = [];
/** Scenario runs that produced no number; any makes the exit code 1. */
let failures = 0;
/** What each proxy should have written to its audit log: one line per HTTP request and WebSocket session. */
const sent = Object.fromEntries(ALL_TARGETS.map((name) => [name, { requests: 0, ws: 0 }])) as Record<TargetName, { requests: number; ws: number }>;

function record(target: TargetName, metric: Metric, value: number): void {
  (results[target][metric] ??= []).push(value);
}

function anomaly(message: string): void {
  const text = message.length > 400 ? `${message.slice(0, 400)}…` : message;
  if (anomalies.length < 30 && !anomalies.includes(text)) anomalies.push(text);
  log(`ANOMALY: ${text}`);
}

// ---------------------------------------------------------------------------------------------
// Clients.

let upstreamPort = 0;
/** The event stream the upstream sends for POST /v1/messages; a proxy must pass it on unchanged. */
let sseBody = "";
const origin = (host = BENCH_DOMAIN) => `https://${host}:${upstreamPort}`;

function dispatcherFor(target: Target, options: { connections: number; resumeSessions?: boolean }): Dispatcher {
  const tls = { ca: target.ca, maxCachedSessions: options.resumeSessions === false ? 0 : 100 };
  const common = {
    connections: options.connections,
    headersTimeout: 15_000,
    bodyTimeout: 30_000,
    keepAliveTimeout: 60_000,
    keepAliveMaxTimeout: 60_000,
  };
  if (!target.proxyUrl) return new Agent({ ...common, connect: { ...tls, lookup: benchLookup } as Agent.Options["connect"] });
  return new ProxyAgent({ ...common, uri: target.proxyUrl, requestTls: tls });
}

async function get(target: Target, dispatcher: Dispatcher, host: string, path: string, reset: boolean): Promise<void> {
  sent[target.name].requests++;
  const { statusCode, body } = await dispatcher.request({ origin: origin(host), path, method: "GET", reset });
  const bytes = await body.arrayBuffer();
  if (statusCode !== 200) {
    throw new Error(`GET ${origin(host)}${path} answered ${statusCode}: ${Buffer.from(bytes).toString("utf8").slice(0, 200)}`);
  }
}

function describe(error: unknown): string {
  const e = error as NodeJS.ErrnoException & { cause?: unknown };
  const cause = e?.cause ? ` (cause: ${describe(e.cause)})` : "";
  return `${e?.code ? `${e.code}: ` : ""}${e?.message ?? String(error)}${cause}`;
}

/** `total` GETs of /small spread over `concurrency` workers; per-request latencies in ms. */
async function runGets(target: Target, dispatcher: Dispatcher, total: number, concurrency: number, reset: boolean, what: string) {
  const latencies: number[] = [];
  let next = 0;
  let errors = 0;
  let firstError = "";
  const started = performance.now();
  const worker = async () => {
    while (next < total) {
      next++;
      const t0 = performance.now();
      try {
        await get(target, dispatcher, BENCH_DOMAIN, "/small", reset);
        latencies.push(performance.now() - t0);
      } catch (error) {
        if (errors++ === 0) firstError = describe(error);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = performance.now() - started;
  if (errors === total) throw new Error(`all ${total} requests failed (${what}); the first: ${firstError}`);
  if (errors) anomaly(`${target.name}, ${what}: ${errors} of ${total} requests failed; the first: ${firstError}`);
  latencies.sort((a, b) => a - b);
  return { latencies, elapsedMs };
}

// ---------------------------------------------------------------------------------------------
// Scenarios. Each opens its own client, warms it up, measures, and closes it.

async function keepAliveGets(target: Target): Promise<void> {
  const { concurrency, requests, warmup } = P.keepAlive;
  const dispatcher = dispatcherFor(target, { connections: concurrency });
  try {
    await runGets(target, dispatcher, warmup, concurrency, false, "keep-alive warm-up");
    const run = await runGets(target, dispatcher, requests, concurrency, false, "keep-alive GETs");
    record(target.name, "ka_rps", run.latencies.length / (run.elapsedMs / 1000));
    record(target.name, "ka_p50", percentile(run.latencies, 50));
    record(target.name, "ka_p99", percentile(run.latencies, 99));
  } finally {
    await dispatcher.close();
  }
}

async function newTunnelPerRequest(target: Target): Promise<void> {
  const { concurrency, requests, warmup } = P.tunnels;
  const dispatcher = dispatcherFor(target, { connections: concurrency, resumeSessions: false });
  try {
    await runGets(target, dispatcher, warmup, concurrency, true, "new-tunnel warm-up");
    const run = await runGets(target, dispatcher, requests, concurrency, true, "new tunnel per request");
    record(target.name, "tun_rps", run.latencies.length / (run.elapsedMs / 1000));
    record(target.name, "tun_p50", percentile(run.latencies, 50));
  } finally {
    await dispatcher.close();
  }
}

async function downloadOnce(target: Target, dispatcher: Dispatcher, bytes: number): Promise<number> {
  sent[target.name].requests++;
  const started = performance.now();
  const { statusCode, body } = await dispatcher.request({ origin: origin(), path: `/download?bytes=${bytes}`, method: "GET" });
  let received = 0;
  for await (const chunk of body) received += (chunk as Buffer).length;
  const elapsedMs = performance.now() - started;
  if (statusCode !== 200 || received !== bytes) throw new Error(`download answered ${statusCode} with ${received} of ${bytes} bytes`);
  return elapsedMs;
}

async function download(target: Target): Promise<void> {
  const dispatcher = dispatcherFor(target, { connections: 1 });
  try {
    await downloadOnce(target, dispatcher, P.download.warmupBytes);
    const elapsedMs = await downloadOnce(target, dispatcher, P.download.bytes);
    record(target.name, "dl_mbps", P.download.bytes / 1e6 / (elapsedMs / 1000));
  } finally {
    await dispatcher.close();
  }
}

async function webSocketEcho(target: Target): Promise<void> {
  const agent = target.proxyUrl
    ? new HttpsProxyAgent(target.proxyUrl, { keepAlive: false })
    : new https.Agent({ keepAlive: false, lookup: benchLookup as unknown as https.AgentOptions["lookup"] });
  sent[target.name].ws++;
  const ws = new WebSocket(`wss://${BENCH_DOMAIN}:${upstreamPort}/echo`, {
    agent,
    ca: target.ca,
    perMessageDeflate: false,
    handshakeTimeout: 10_000,
  });
  const payload = randomBytes(P.ws.size);
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) => reject(new Error(`WebSocket handshake answered ${res.statusCode}`)));
    });

    const exchange = (count: number) =>
      new Promise<number>((resolve, reject) => {
        let sent = 0;
        let received = 0;
        const started = performance.now();
        const cleanup = () => {
          ws.off("message", onMessage);
          ws.off("close", onClose);
          ws.off("error", onError);
        };
        const onMessage = (data: Buffer) => {
          received++;
          if (data.length !== P.ws.size) {
            cleanup();
            reject(new Error(`echo of ${data.length} bytes, expected ${P.ws.size}`));
            return;
          }
          if (received === count) {
            cleanup();
            resolve(performance.now() - started);
          } else if (sent < count) {
            sent++;
            ws.send(payload);
          }
        };
        const onClose = (code: number) => (cleanup(), reject(new Error(`WebSocket closed (${code}) after ${received} of ${count} echoes`)));
        const onError = (error: Error) => (cleanup(), reject(error));
        ws.on("message", onMessage);
        ws.once("close", onClose);
        ws.once("error", onError);
        while (sent < Math.min(P.ws.window, count)) {
          sent++;
          ws.send(payload);
        }
      });

    await exchange(P.ws.warmup);
    const elapsedMs = await exchange(P.ws.messages);
    record(target.name, "ws_mps", P.ws.messages / (elapsedMs / 1000));
  } finally {
    if (ws.readyState === WebSocket.OPEN) {
      const closed = new Promise<void>((resolve) => ws.once("close", () => resolve()));
      ws.close(1000, "done");
      await withTimeout(closed, 5_000, "WebSocket close").catch(() => ws.terminate());
    } else {
      ws.terminate();
    }
    agent.destroy();
  }
}

function firstSeenHost(round: number, index: number): string {
  return `fs${round}-${index}.${BENCH_DOMAIN}`;
}

async function firstSeen(target: Target, round: number, portcullis?: ChildHandle): Promise<void> {
  // One connection, no TLS session resumption, connection closed after each request: every
  // request is a new CONNECT (or TCP connection, direct) plus a full handshake.
  const dispatcher = dispatcherFor(target, { connections: 1, resumeSessions: false });
  const before = portcullis ? await certificateStats(portcullis) : undefined;
  const first: number[] = [];
  const repeat: number[] = [];
  const added: number[] = [];
  try {
    // Warm the client path itself on the already-known host.
    for (let i = 0; i < 3; i++) await get(target, dispatcher, BENCH_DOMAIN, "/small", true);
    for (let i = 0; i < P.firstSeen.hosts; i++) {
      const host = firstSeenHost(round, i);
      let t0 = performance.now();
      await get(target, dispatcher, host, "/small", true);
      const a = performance.now() - t0;
      t0 = performance.now();
      await get(target, dispatcher, host, "/small", true);
      const b = performance.now() - t0;
      first.push(a);
      repeat.push(b);
      added.push(a - b);
    }
  } finally {
    await dispatcher.close();
  }
  record(target.name, "fs_first", median(first));
  record(target.name, "fs_repeat", median(repeat));
  record(target.name, "fs_added", median(added));
  if (portcullis && before) {
    const after = await certificateStats(portcullis);
    const forged = after.forged - before.forged;
    if (forged !== P.firstSeen.hosts) anomaly(`portcullis forged ${forged} certificates for ${P.firstSeen.hosts} never-seen hosts in round ${round + 1}`);
  }
}

interface CertificateStats {
  hits: number;
  misses: number;
  forged: number;
  diskHits: number;
}

async function certificateStats(child: ChildHandle): Promise<CertificateStats> {
  const reply = await child.ask<ChildMessage & { certificates: CertificateStats }>({ type: "stats" });
  return reply.certificates;
}

// ---------------------------------------------------------------------------------------------
// Set-up.

function portcullisPolicy(work: string, upstreamCaFile: string, hosts: string[], withNetwork: boolean): string {
  const resolve = hosts.map((host) => `    ${JSON.stringify(host)}: 127.0.0.1`).join("\n");
  // Once the policy has network rules (SPEC §3), the benchmark goes through a real rule match.
  const network = withNetwork
    ? `network:
  default: deny
  private_destinations: deny
  allow_ips: ["127.0.0.1/32"]
  rules:
    - name: bench
      action: allow
      hosts: [${JSON.stringify(BENCH_DOMAIN)}, ${JSON.stringify(`*.${BENCH_DOMAIN}`)}]
      ports: [${upstreamPort}]
`
    : "";
  return `# written by bench/run.ts
version: 1
proxy:
  listen: 127.0.0.1:0
ca:
  dir: ${JSON.stringify(join(work, "portcullis-ca"))}
upstream:
  trust: [${JSON.stringify(upstreamCaFile)}]
  connect_timeout: 5s
  response_timeout: 30s
  resolve:
${resolve}
log:
  audit: ${JSON.stringify(join(work, "portcullis-audit.log"))}
  level: warn
${network}`;
}

function choosePolicy(work: string, upstreamCaFile: string, hosts: string[]): { file: string; withNetwork: boolean } {
  const file = join(work, "portcullis-policy.yaml");
  for (const withNetwork of [true, false]) {
    const text = portcullisPolicy(work, upstreamCaFile, hosts, withNetwork);
    try {
      parsePolicy(text, file, work);
    } catch (error) {
      if (!withNetwork) throw error;
      // This build's policy has no network section yet (or spells it differently): say so.
      log(`policy with network rules rejected, running without them: ${describe(error).split("\n")[0]}`);
      continue;
    }
    writeFileSync(file, text);
    return { file, withNetwork };
  }
  throw new Error("unreachable");
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const work = mkdtempSync(join(tmpdir(), "portcullis-bench-"));
  const children: ChildHandle[] = [];
  try {
    const hosts = [BENCH_DOMAIN];
    for (let round = 0; round < ROUNDS; round++) for (let i = 0; i < P.firstSeen.hosts; i++) hosts.push(firstSeenHost(round, i));

    log(`work dir ${work}; starting the upstream`);
    const upstream = await startChild<ChildMessage & { port: number; caFile: string; caPem: string }>(
      "upstream",
      "upstream-child.ts",
      [join(work, "upstream-ca"), hosts.join(",")],
    );
    children.push(upstream);
    upstreamPort = upstream.ready.port;

    const policy = choosePolicy(work, upstream.ready.caFile, hosts);
    log(`starting portcullis (policy ${policy.withNetwork ? "with" : "without"} network rules) and http-mitm-proxy`);
    const [portcullis, mitm] = await Promise.all([
      startChild<ChildMessage & { port: number; caPem: string }>("portcullis", "portcullis-child.ts", [policy.file]),
      startChild<ChildMessage & { port: number; caPem: string }>("http-mitm-proxy", "mitm-child.ts", [join(work, "mitm-ca")], {
        env: { NODE_EXTRA_CA_CERTS: upstream.ready.caFile },
      }),
    ]);
    children.push(portcullis, mitm);

    const targets: Record<TargetName, Target> = {
      direct: { name: "direct", ca: upstream.ready.caPem },
      portcullis: { name: "portcullis", proxyUrl: `http://127.0.0.1:${portcullis.ready.port}`, ca: portcullis.ready.caPem },
      mitm: { name: "mitm", proxyUrl: `http://127.0.0.1:${mitm.ready.port}`, ca: mitm.ready.caPem },
    };

    const scenarios: { name: string; run: (target: Target, round: number) => Promise<void> }[] = [
      { name: "keep-alive GETs", run: keepAliveGets },
      { name: "new tunnel per request", run: newTunnelPerRequest },
      { name: "download", run: download },
      { name: "WebSocket echo", run: webSocketEcho },
      { name: "first-seen host", run: (target, round) => firstSeen(target, round, target.name === "portcullis" ? portcullis : undefined) },
    ];

    for (let round = 0; round < ROUNDS; round++) {
      // Rotate which path goes first so no path always runs on a cold (or hot) machine.
      const order = TARGETS.map((_name, i) => TARGETS[(i + round) % TARGETS.length]!);
      for (const scenario of scenarios) {
        for (const name of order) {
          const started = performance.now();
          try {
            await withTimeout(scenario.run(targets[name], round), SCENARIO_TIMEOUT_MS, `${name} ${scenario.name}`);
          } catch (error) {
            failures++;
            anomaly(`${name}, ${scenario.name} (round ${round + 1}) failed: ${describe(error)}`);
          }
          log(`round ${round + 1}/${ROUNDS} ${scenario.name.padEnd(22)} ${COLUMN[name].padEnd(15)} ${Math.round(performance.now() - started)} ms`);
        }
      }
    }

    // Correctness cross-checks, reported as anomalies when off.
    const mitmStats = await mitm.ask<ChildMessage & { errors: Record<string, number>; firstErrors: string[] }>({ type: "stats" });
    const mitmErrorCount = Object.values(mitmStats.errors).reduce((a, b) => a + b, 0);
    const portcullisStats = await certificateStats(portcullis);

    log("closing");
    await Promise.all(children.map((child) => child.close()));
    children.length = 0;

    let auditLines = 0;
    try {
      auditLines = readFileSync(join(work, "portcullis-audit.log"), "utf8").split("\n").filter(Boolean).length;
    } catch {
      // No audit file: reported below.
    }
    const expectedAudit = portcullisRequests + portcullisWsSessions;
    if (auditLines !== expectedAudit) {
      anomaly(`portcullis audit log has ${auditLines} lines for ${portcullisRequests} HTTP requests + ${portcullisWsSessions} WebSocket sessions (${expectedAudit} expected)`);
    }

    printReport(startedAt, policy.withNetwork, { portcullisStats, auditLines, mitmErrors: mitmStats.errors, mitmErrorCount, mitmFirst: mitmStats.firstErrors });
    return failures ? 1 : 0;
  } finally {
    await Promise.all(children.map((child) => child.close().catch(() => null)));
    killAllChildren();
    rmSync(work, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Report.

function printReport(
  startedAt: Date,
  withNetwork: boolean,
  extra: { portcullisStats: CertificateStats; auditLines: number; mitmErrors: Record<string, number>; mitmErrorCount: number; mitmFirst: string[] },
): void {
  const value = (target: TargetName, metric: Metric) => median(results[target][metric] ?? []);
  const cpuList = cpus();
  const lines: string[] = [];
  lines.push(`## portcullis benchmark — ${startedAt.toISOString().slice(0, 10)}`);
  lines.push("");
  lines.push(
    `Node ${process.version}, ${process.platform}/${process.arch}, ${cpuList.length} × ${cpuList[0]?.model.trim() ?? "unknown CPU"}; ` +
      `median of ${ROUNDS} round${ROUNDS > 1 ? "s" : ""}${QUICK ? " (BENCH_QUICK: reduced counts)" : ""}; ` +
      `portcullis policy ${withNetwork ? "with a network allow rule" : "without network rules (this build has none)"}, audit log to a file.`,
  );
  lines.push("");
  lines.push("| scenario | direct | portcullis | http-mitm-proxy | portcullis/direct | mitm/direct | portcullis/mitm |");
  lines.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const row of ROWS) {
    const d = value("direct", row.metric);
    const p = value("portcullis", row.metric);
    const m = value("mitm", row.metric);
    lines.push(
      `| ${row.label} | ${formatNumber(d)} | ${formatNumber(p)} | ${formatNumber(m)} | ` +
        `${row.ratios ? formatRatio(p / d) : "—"} | ${row.ratios ? formatRatio(m / d) : "—"} | ${formatRatio(p / m)} |`,
    );
  }
  lines.push("");
  lines.push("↑ higher is better, ↓ lower is better. Ratios are plain quotients of the two columns.");
  lines.push(
    `portcullis certificates: ${extra.portcullisStats.forged} forged, ${extra.portcullisStats.hits} cache hits; audit log: ${extra.auditLines} lines. ` +
      `http-mitm-proxy reported ${extra.mitmErrorCount} errors${extra.mitmErrorCount ? ` (${Object.entries(extra.mitmErrors).map(([k, v]) => `${k} ×${v}`).join(", ")})` : ""}.`,
  );
  if (anomalies.length) {
    lines.push("");
    lines.push("Anomalies:");
    for (const message of anomalies) lines.push(`- ${message}`);
  }
  process.stdout.write(`${lines.join("\n")}\n`);
  // Every round's value, to judge the noise behind the medians.
  for (const row of ROWS) {
    const perRound = TARGETS.map((target) => `${COLUMN[target]} ${(results[target][row.metric] ?? []).map(formatNumber).join(" / ")}`);
    log(`per round: ${row.metric.padEnd(9)} ${perRound.join(" | ")}`);
  }
}

const watchdog = setTimeout(() => {
  log(`still running after ${WATCHDOG_MS / 1000} s: giving up`);
  killAllChildren();
  process.exit(2);
}, WATCHDOG_MS);
watchdog.unref();

main().then(
  (code) => {
    process.exitCode = code;
    // Everything is closed by now; a forgotten handle must not keep the benchmark alive.
    setTimeout(() => process.exit(code), 1_000).unref();
  },
  (error: unknown) => {
    log(`failed: ${describe(error)}`);
    killAllChildren();
    process.exit(1);
  },
);
