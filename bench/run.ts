// portcullis benchmark: direct HTTPS vs. portcullis vs. http-mitm-proxy, on 127.0.0.1 only.
//
//   make bench                      (= npm run build, then node --import tsx bench/run.ts)
//   BENCH_ROUNDS=1 BENCH_QUICK=1 node --import tsx bench/run.ts     (smoke run, a few seconds)
//
// portcullis is measured as built: every portcullis process runs dist/ (run `npm run build`
// first; make bench does). The upstream, portcullis and http-mitm-proxy each run in a child
// process of their own, so each has its own event loop as in production; this process is only
// the client. Two more portcullis instances are started through the CLI (`start --workers 1`
// and `--workers 2`), and one with an `llm:` rule for the streaming scenario. The HTTP/2 and
// gRPC scenarios (bench/h2.ts) compare direct, portcullis (h2 to an h2 upstream, and h2 to an
// HTTP/1.1-only one) and mitmproxy (mitmdump, bench/mitmproxy.ts) in the same rounds. Every loop is
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
import { fileURLToPath, pathToFileURL } from "node:url";
import { HttpsProxyAgent } from "https-proxy-agent";
import { Agent, ProxyAgent, type Dispatcher } from "undici";
import WebSocket from "ws";
import { grpcStream, grpcUnary, h2Download, h2Gets, type H2Path } from "./h2.js";
import {
  benchLookup,
  BENCH_DOMAIN,
  cpuSeconds,
  formatNumber,
  formatRatio,
  killAllChildren,
  log,
  median,
  percentile,
  procStat,
  startChild,
  trackChild,
  withTimeout,
  type ChildHandle,
  type ChildMessage,
} from "./lib.js";
import { mitmdumpVersion, startMitmproxy, type MitmproxyHandle } from "./mitmproxy.js";

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
  // HTTP/2 and gRPC (bench/h2.ts): one h2 connection (one gRPC channel) per path and round.
  // Smaller counts than the HTTP/1.1 rows: mitmproxy (Python) is the slow column.
  h2Gets: { streams: 100, requests: QUICK ? 300 : 2000, warmup: QUICK ? 100 : 300 },
  h2Download: { bytes: (QUICK ? 8 : 100) * 1024 * 1024, warmupBytes: (QUICK ? 1 : 4) * 1024 * 1024 },
  grpcUnary: { calls: QUICK ? 100 : 1000, warmup: QUICK ? 20 : 100, inFlight: 32, size: 64 },
  grpcStream: { messages: QUICK ? 2000 : 20_000, warmup: QUICK ? 200 : 1000, size: 64 },
};
const SCENARIO_TIMEOUT_MS = 60_000;
/** The whole run's deadline; BENCH_WATCHDOG_S raises it on a machine too slow for five rounds in 300 s. */
const WATCHDOG_MS = Math.max(300, Number(process.env.BENCH_WATCHDOG_S ?? 300) || 300) * 1000;
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
  /** The proxy's process, for CPU per request (keep-alive and download); none for direct and the CLI. */
  pid?: number;
}

/**
 * The HTTP/2 and gRPC paths. direct: h2 client to the h2 upstream (node:http2; grpc-js for
 * gRPC). portcullis: the main portcullis instance, h2 on both sides. portcullis_h1: the same
 * instance, h2 client, HTTP/1.1-only upstream (the HTTPS server of the HTTP/1.1 rows, which
 * also answers gRPC by hand). mitmproxy: mitmdump, h2 on both sides.
 */
type H2Name = "direct" | "portcullis" | "portcullis_h1" | "mitmproxy";
const H2_NAMES: H2Name[] = ["direct", "portcullis", "portcullis_h1", "mitmproxy"];
const H2_COLUMN: Record<H2Name, string> = {
  direct: "direct",
  portcullis: "portcullis h2↔h2",
  portcullis_h1: "portcullis h2→h1",
  mitmproxy: "mitmproxy",
};
type H2Metric = "h2_rps" | "h2_p50" | "h2_p99" | "h2_dl" | "grpc_unary" | "grpc_stream";
/** The rows; `cpu` names the unit of the proxy CPU shown for the row's measured run. */
const H2_ROWS: { metric: H2Metric; label: string; cpu?: string }[] = [
  { metric: "h2_rps", label: `h2 small GET, ${P.h2Gets.streams} streams in flight on one connection, ${P.h2Gets.requests} req — req/s ↑`, cpu: "µs/req" },
  { metric: "h2_p50", label: "  ″ latency p50 — ms ↓" },
  { metric: "h2_p99", label: "  ″ latency p99 — ms ↓" },
  { metric: "h2_dl", label: `h2 ${P.h2Download.bytes / 1024 / 1024} MiB download, one stream — MB/s ↑`, cpu: "µs/MB" },
  { metric: "grpc_unary", label: `gRPC unary, ${P.grpcUnary.size} B, ${P.grpcUnary.inFlight} in flight on one channel, ${P.grpcUnary.calls} calls — calls/s ↑`, cpu: "µs/call" },
  { metric: "grpc_stream", label: `gRPC server streaming, ${P.grpcStream.size} B messages, ${P.grpcStream.messages} msgs — msgs/s ↑`, cpu: "µs/msg" },
];
const h2Results = Object.fromEntries(H2_NAMES.map((name) => [name, {}])) as Record<H2Name, Partial<Record<H2Metric, number[]>>>;
/** The proxy's CPU over each measured run, per unit (µs), by the metric of the row it belongs to. */
const h2Cpu = Object.fromEntries(H2_NAMES.map((name) => [name, {}])) as Record<H2Name, Partial<Record<H2Metric, number[]>>>;
/** h2 streams and gRPC calls sent per path (portcullis' audit log must have one line for each). */
const h2Sent = Object.fromEntries(H2_NAMES.map((name) => [name, 0])) as Record<H2Name, number>;
/** The HTTP/1.1 rows' proxy CPU per request (keep-alive, µs) and per MB (download, µs), for comparison. */
const h1Cpu: Partial<Record<TargetName, { ka?: number[]; dl?: number[] }>> = {};

function recordH2(name: H2Name, metric: H2Metric, value: number, cpuPerUnit?: number): void {
  (h2Results[name][metric] ??= []).push(value);
  if (cpuPerUnit !== undefined && Number.isFinite(cpuPerUnit)) (h2Cpu[name][metric] ??= []).push(cpuPerUnit);
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
/** The upstream's h2-only port (GET /small, /download) and its grpc-js port. */
let upstreamH2Port = 0;
let upstreamGrpcPort = 0;
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
    const cpuBefore = cpuSeconds(target.pid);
    const run = await runGets(target, dispatcher, requests, concurrency, false, "keep-alive GETs");
    const cpu = cpuSeconds(target.pid) - cpuBefore;
    if (Number.isFinite(cpu)) ((h1Cpu[target.name] ??= {}).ka ??= []).push((cpu / run.latencies.length) * 1e6);
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
    const cpuBefore = cpuSeconds(target.pid);
    const elapsedMs = await downloadOnce(target, dispatcher, P.download.bytes);
    const cpu = cpuSeconds(target.pid) - cpuBefore;
    if (Number.isFinite(cpu)) ((h1Cpu[target.name] ??= {}).dl ??= []).push((cpu / (P.download.bytes / 1e6)) * 1e6);
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

/**
 * One streamed POST /v1/messages on a warm connection: ms from sending the request to having
 * the first complete text event (content_block_delta / text_delta), and to the end of the stream.
 */
async function streamOnce(target: Target, dispatcher: Dispatcher): Promise<{ first: number; whole: number }> {
  sent[target.name].requests++;
  const t0 = performance.now();
  const { statusCode, headers, body } = await dispatcher.request({
    origin: origin(LLM_HOST),
    path: "/v1/messages",
    method: "POST",
    headers: { "content-type": "application/json", "anthropic-version": "2023-06-01" },
    body: LLM_REQUEST,
  });
  const decoder = new StringDecoder("utf8");
  let text = "";
  let scanned = 0;
  let first = NaN;
  for await (const chunk of body) {
    text += decoder.write(chunk as Buffer);
    // Look at complete events only, until the first text event has been seen.
    for (let end = text.indexOf("\n\n", scanned); Number.isNaN(first) && end !== -1; end = text.indexOf("\n\n", scanned)) {
      if (text.slice(scanned, end).includes('"text_delta"')) first = performance.now() - t0;
      scanned = end + 2;
    }
  }
  const whole = performance.now() - t0;
  text += decoder.end();
  const contentType = String(headers["content-type"] ?? "");
  if (statusCode !== 200 || !contentType.startsWith("text/event-stream")) {
    throw new Error(`POST /v1/messages answered ${statusCode} (${contentType}): ${text.slice(0, 200)}`);
  }
  if (text !== sseBody) throw new Error(`the event stream arrived altered: ${JSON.stringify(text.slice(0, 300))}`);
  if (Number.isNaN(first)) throw new Error("no text event in the stream");
  return { first, whole };
}

/** Once per run: a stream carrying a tool call the llm rule denies must end in portcullis' error event. */
async function checkGuardActive(target: Target): Promise<void> {
  const dispatcher = dispatcherFor(target, { connections: 1 });
  try {
    sent[target.name].requests++;
    const { statusCode, body } = await dispatcher.request({
      origin: origin(LLM_HOST),
      path: "/v1/messages?tool=rm",
      method: "POST",
      headers: { "content-type": "application/json" },
      body: LLM_REQUEST,
    });
    const text = await body.text();
    if (statusCode !== 200 || !text.includes("policy_denied") || text.includes("rm -rf")) {
      anomaly(`${COLUMN[target.name]}: a streamed bash "rm -rf" tool call was not denied (status ${statusCode}): ${JSON.stringify(text.slice(0, 300))}`);
    }
  } finally {
    await dispatcher.close();
  }
}

async function firstTextToken(target: Target): Promise<void> {
  const dispatcher = dispatcherFor(target, { connections: 1 });
  const first: number[] = [];
  const whole: number[] = [];
  try {
    for (let i = 0; i < P.ttft.warmup; i++) await streamOnce(target, dispatcher);
    for (let i = 0; i < P.ttft.requests; i++) {
      const sample = await streamOnce(target, dispatcher);
      first.push(sample.first);
      whole.push(sample.whole);
    }
  } finally {
    await dispatcher.close();
  }
  const pooled = (ttftSamples[target.name] ??= { first: [], whole: [] });
  pooled.first.push(...first);
  pooled.whole.push(...whole);
  first.sort((a, b) => a - b);
  whole.sort((a, b) => a - b);
  record(target.name, "ttft_p50", percentile(first, 50));
  record(target.name, "ttft_p90", percentile(first, 90));
  record(target.name, "stream_p50", percentile(whole, 50));
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

// ---------------------------------------------------------------------------------------------
// portcullis through its command line: `node dist/cli.js start --workers N`.

interface CliHandle {
  name: string;
  port: number;
  caPem: string;
  child: ChildProcess;
  /** What the CLI wrote besides its "listening" line (warnings, worker restarts), bounded. */
  output(): string;
  /** CPU seconds (user + system) of the CLI process and of each of its child processes (the workers). */
  cpu(): { primary: number; workers: number[] } | undefined;
  close(): Promise<void>;
}

function childPids(parent: number): number[] {
  const pids: number[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync("/proc");
  } catch {
    return pids;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    if (procStat(Number(entry))?.ppid === parent) pids.push(Number(entry));
  }
  return pids;
}

async function startCli(name: string, policyFile: string, caDir: string, workers: number): Promise<CliHandle> {
  const child = spawn(process.execPath, [CLI, "start", "--policy", policyFile, "--listen", "127.0.0.1:0", "--workers", String(workers)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  trackChild(child);
  let stderr = "";
  let stdout = "";
  child.stderr!.setEncoding("utf8");
  child.stdout!.setEncoding("utf8");
  child.stderr!.on("data", (text: string) => void (stderr.length < 20_000 && (stderr += text)));
  child.stdout!.on("data", (text: string) => void (stdout.length < 20_000 && (stdout += text)));
  const exited = new Promise<string>((resolve) => child.once("exit", (code, signal) => resolve(signal ?? String(code))));
  const listening = /portcullis listening on 127\.0\.0\.1:(\d+)( \((\d+) workers\))?\n/;

  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`${name}: no "portcullis listening" line within 30 s; stderr: ${stderr.slice(0, 500)}`)), 30_000);
    const onData = () => {
      const found = listening.exec(stderr);
      if (found) done(undefined, found);
    };
    const onExit = (code: number | null, signal: string | null) => done(new Error(`${name}: exited (${signal ?? code}) before listening; stderr: ${stderr.slice(0, 500)}`));
    const done = (error?: Error, found?: RegExpExecArray) => {
      clearTimeout(timer);
      child.stderr!.off("data", onData);
      child.off("exit", onExit);
      if (error) {
        child.kill("SIGKILL");
        reject(error);
      } else resolve(found!);
    };
    child.stderr!.on("data", onData);
    child.once("exit", onExit);
  });
  const announced = match[3] ? Number(match[3]) : 1;
  if (announced !== workers) anomaly(`${name}: started with --workers ${workers} but announced "${match[0].trim()}"`);
  const caPem = readFileSync(join(caDir, "ca.pem"), "utf8");
  let workerPids: number[] = [];

  return {
    name,
    port: Number(match[1]),
    caPem,
    child,
    output: () => `${stderr.replace(listening, "")}${stdout}`.trim(),
    cpu() {
      const primary = procStat(child.pid!);
      if (!primary) return undefined;
      workerPids = childPids(child.pid!);
      return { primary: primary.cpu, workers: workerPids.map((pid) => procStat(pid)?.cpu ?? NaN) };
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        if (workerPids.length === 0) workerPids = childPids(child.pid!);
        const started = performance.now();
        child.kill("SIGTERM"); // drains and exits 0, the workers with it
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        const how = await exited;
        clearTimeout(timer);
        const tookMs = Math.round(performance.now() - started);
        log(`${name}: exited ${how} ${tookMs} ms after SIGTERM`);
        if (how !== "0") anomaly(`${name}: exited with ${how} after SIGTERM (0 expected)`);
        else if (tookMs > 5_000) anomaly(`${name}: took ${tookMs} ms to exit after SIGTERM with no client connection open`);
      }
      // Workers must not outlive their primary; these pids are this benchmark's own processes.
      for (const pid of workerPids) {
        const alive = procStat(pid);
        if (alive && alive.ppid === child.pid) {
          anomaly(`${name}: worker ${pid} still running after the primary exited; killed`);
          process.kill(pid, "SIGKILL");
        }
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Set-up.

interface PolicyFiles {
  /** portcullis-child.ts: the main portcullis column. */
  main: string;
  /** `start --workers 1` and `--workers 2`, each with its own CA directory and audit log. */
  workers1: string;
  workers2: string;
  /** portcullis-child.ts with an `llm:` rule for *.bench.test. */
  llm: string;
}

function portcullisPolicy(dir: string, upstreamCaFile: string, hosts: string[], withNetwork: boolean, withLlm: boolean): string {
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
      ports: [${upstreamPort}, ${upstreamH2Port}, ${upstreamGrpcPort}]
`
    : "";
  // The streaming scenario's rule, as a policy author would write it: tool calls are judged,
  // so every event stream from a matching host goes through portcullis' SSE guard.
  const llm = withLlm
    ? `llm:
  - name: no-rm
    hosts: [${JSON.stringify(`*.${BENCH_DOMAIN}`)}]
    deny_tools:
      - tool: bash
        when: { path: command, matches: "rm\\\\s+-rf" }
`
    : "";
  return `# written by bench/run.ts
version: 1
proxy:
  listen: 127.0.0.1:0
ca:
  dir: ${JSON.stringify(join(dir, "ca"))}
upstream:
  trust: [${JSON.stringify(upstreamCaFile)}]
  connect_timeout: 5s
  response_timeout: 30s
  resolve:
${resolve}
log:
  audit: ${JSON.stringify(join(dir, "audit.log"))}
  level: warn
${network}${llm}`;
}

type ParsePolicy = (text: string, file: string, baseDir: string) => unknown;

/** Writes one policy per portcullis instance, each in its own directory (CA, audit log) under work. */
function writePolicies(parsePolicy: ParsePolicy, work: string, upstreamCaFile: string, hosts: string[]): { files: PolicyFiles; withNetwork: boolean } {
  let withNetwork = true;
  try {
    parsePolicy(portcullisPolicy(work, upstreamCaFile, hosts, true, false), join(work, "probe.yaml"), work);
  } catch (error) {
    // This build's policy has no network section yet (or spells it differently): say so.
    log(`policy with network rules rejected, running without them: ${describe(error).split("\n")[0]}`);
    withNetwork = false;
  }
  const write = (name: string, withLlm: boolean) => {
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "policy.yaml");
    const text = portcullisPolicy(dir, upstreamCaFile, hosts, withNetwork, withLlm);
    parsePolicy(text, file, dir); // throws with FILE:LINE:COL when this build rejects it
    writeFileSync(file, text);
    return file;
  };
  return { files: { main: write("portcullis", false), workers1: write("workers1", false), workers2: write("workers2", false), llm: write("llm", true) }, withNetwork };
}

function auditLog(work: string, target: TargetName): string {
  return join(work, target, "audit.log");
}

async function main(): Promise<number> {
  const startedAt = new Date();
  if (!existsSync(DIST_INDEX) || !existsSync(CLI)) throw new Error(`${DIST_INDEX} or ${CLI} is missing: run \`npm run build\` first (make bench does)`);
  const stale = staleSource();
  if (stale) log(`WARNING: ${stale} is newer than dist/index.js; measuring the build in dist/ as it is`);
  const { parsePolicy } = (await import(pathToFileURL(DIST_INDEX).href)) as { parsePolicy: ParsePolicy };
  const work = mkdtempSync(join(tmpdir(), "portcullis-bench-"));
  workDir = work;
  const children: ChildHandle[] = [];
  const clis: CliHandle[] = [];
  let mitmproxy: MitmproxyHandle | undefined;
  try {
    const hosts = [BENCH_DOMAIN, LLM_HOST];
    for (let round = 0; round < ROUNDS; round++) for (let i = 0; i < P.firstSeen.hosts; i++) hosts.push(firstSeenHost(round, i));

    const mitmproxyVersionAsked = mitmdumpVersion();
    log(`work dir ${work}; starting the upstream`);
    const upstream = await startChild<ChildMessage & { port: number; h2Port: number; grpcPort: number; caFile: string; caPem: string; sseBody: string }>(
      "upstream",
      "upstream-child.ts",
      [join(work, "upstream-ca"), hosts.join(",")],
    );
    children.push(upstream);
    upstreamPort = upstream.ready.port;
    upstreamH2Port = upstream.ready.h2Port;
    upstreamGrpcPort = upstream.ready.grpcPort;
    sseBody = upstream.ready.sseBody;

    const policy = writePolicies(parsePolicy, work, upstream.ready.caFile, hosts);
    const mitmproxyVersion = await mitmproxyVersionAsked;
    log(
      `starting portcullis ×2 (dist/, policy ${policy.withNetwork ? "with" : "without"} network rules; one with an llm rule), http-mitm-proxy` +
        (mitmproxyVersion ? ` and mitmproxy (${mitmproxyVersion})` : "; no mitmdump on the PATH (apt-get install mitmproxy), so no mitmproxy column"),
    );
    // mitmdump (Python) takes a few seconds to start: it comes up while the rest starts, and is awaited last.
    const mitmproxyStarting = mitmproxyVersion
      ? startMitmproxy(join(work, "mitmproxy"), upstream.ready.caFile, mitmproxyVersion).catch((error: unknown) => error as Error)
      : Promise.resolve(new Error("mitmdump is not installed (apt-get install mitmproxy)"));
    const [portcullis, llm, mitm] = await Promise.all([
      startChild<ChildMessage & { port: number; caPem: string }>("portcullis", "portcullis-child.ts", [policy.files.main]),
      startChild<ChildMessage & { port: number; caPem: string }>("portcullis+llm", "portcullis-child.ts", [policy.files.llm]),
      startChild<ChildMessage & { port: number; caPem: string }>("http-mitm-proxy", "mitm-child.ts", [join(work, "mitm-ca")], {
        env: { NODE_EXTRA_CA_CERTS: upstream.ready.caFile },
      }),
    ]);
    children.push(portcullis, llm, mitm);

    const targets: Partial<Record<TargetName, Target>> = {
      direct: { name: "direct", ca: upstream.ready.caPem },
      portcullis: { name: "portcullis", proxyUrl: `http://127.0.0.1:${portcullis.ready.port}`, ca: portcullis.ready.caPem, pid: portcullis.process.pid },
      mitm: { name: "mitm", proxyUrl: `http://127.0.0.1:${mitm.ready.port}`, ca: mitm.ready.caPem, pid: mitm.process.pid },
      llm: { name: "llm", proxyUrl: `http://127.0.0.1:${llm.ready.port}`, ca: llm.ready.caPem },
    };
    const count = (name: H2Name, auditAs?: TargetName) => (n: number) => {
      h2Sent[name] += n;
      if (auditAs) sent[auditAs].requests += n;
    };
    const h2Paths: Partial<Record<H2Name, H2Path>> = {
      direct: { ca: upstream.ready.caPem, httpPort: upstreamH2Port, grpcPort: upstreamGrpcPort, sent: count("direct") },
      portcullis: { ...targets.portcullis!, httpPort: upstreamH2Port, grpcPort: upstreamGrpcPort, sent: count("portcullis", "portcullis") },
      portcullis_h1: { ...targets.portcullis!, httpPort: upstreamPort, grpcPort: upstreamPort, sent: count("portcullis_h1", "portcullis") },
    };

    // One after the other: each start forges nothing on the clock, but the CA and key are made now.
    log("starting portcullis through its CLI: start --workers 1, then --workers 2");
    for (const [name, count] of [["workers1", 1], ["workers2", 2]] as const) {
      try {
        const cli = await startCli(COLUMN[name], policy.files[name], join(work, name, "ca"), count);
        clis.push(cli);
        targets[name] = { name, proxyUrl: `http://127.0.0.1:${cli.port}`, ca: cli.caPem };
      } catch (error) {
        failures++;
        anomaly(`could not start ${COLUMN[name]}: ${describe(error)}`);
      }
    }
    const mitmproxyStarted = await mitmproxyStarting;
    if (mitmproxyStarted instanceof Error) {
      failures++;
      anomaly(`no mitmproxy column: ${describe(mitmproxyStarted)}`);
    } else {
      mitmproxy = mitmproxyStarted;
      h2Paths.mitmproxy = { proxyUrl: `http://127.0.0.1:${mitmproxy.port}`, ca: mitmproxy.caPem, pid: mitmproxy.pid, httpPort: upstreamH2Port, grpcPort: upstreamGrpcPort, sent: count("mitmproxy") };
    }

    const scenarios: { name: string; targets: TargetName[]; run: (target: Target, round: number) => Promise<void> }[] = [
      { name: "keep-alive GETs", targets: TARGETS, run: keepAliveGets },
      { name: "keep-alive GETs", targets: ["workers1", "workers2"], run: keepAliveGets },
      { name: "new tunnel per request", targets: TARGETS, run: newTunnelPerRequest },
      { name: "new tunnel per request", targets: ["workers1", "workers2"], run: newTunnelPerRequest },
      { name: "download", targets: TARGETS, run: download },
      { name: "WebSocket echo", targets: TARGETS, run: webSocketEcho },
      { name: "first-seen host", targets: TARGETS, run: (target, round) => firstSeen(target, round, target.name === "portcullis" ? portcullis : undefined) },
      { name: "first text token", targets: ["direct", "llm"], run: firstTextToken },
    ];
    /** TLS connections the upstream's HTTP/1.1 and h2 servers have accepted so far (grpc-js' are not counted). */
    const upstreamConnections = async () =>
      (await upstream.ask<ChildMessage & { tlsConnections: { http1: number; h2: number } }>({ type: "stats" }).catch(() => ({ tlsConnections: { http1: NaN, h2: NaN } }))).tlsConnections;
    const h2Scenarios: { name: string; run: (path: H2Path, name: H2Name) => Promise<void> }[] = [
      {
        name: "h2 multiplexed GETs",
        run: async (path, name) => {
          const r = await h2Gets(path, P.h2Gets, (text) => anomaly(`${H2_COLUMN[name]}, ${text}`));
          recordH2(name, "h2_rps", r.rps, r.cpuPerRequestUs);
          recordH2(name, "h2_p50", r.p50);
          recordH2(name, "h2_p99", r.p99);
        },
      },
      {
        name: "h2 download",
        run: async (path, name) => {
          const r = await h2Download(path, P.h2Download);
          recordH2(name, "h2_dl", r.mbps, r.cpuPerMbUs);
        },
      },
      {
        name: "gRPC unary",
        run: async (path, name) => {
          const r = await grpcUnary(path, P.grpcUnary, (text) => anomaly(`${H2_COLUMN[name]}, ${text}`));
          recordH2(name, "grpc_unary", r.cps, r.cpuPerCallUs);
        },
      },
      {
        name: "gRPC streaming",
        run: async (path, name) => {
          const r = await grpcStream(path, P.grpcStream);
          recordH2(name, "grpc_stream", r.mps, r.cpuPerMessageUs);
        },
      },
    ];

    for (let round = 0; round < ROUNDS; round++) {
      for (const scenario of scenarios) {
        // Rotate which path goes first so no path always runs on a cold (or hot) machine.
        const available = scenario.targets.filter((name) => targets[name]);
        const order = available.map((_name, i) => available[(i + round) % available.length]!);
        for (const name of order) {
          const started = performance.now();
          try {
            await withTimeout(scenario.run(targets[name]!, round), SCENARIO_TIMEOUT_MS, `${name} ${scenario.name}`);
          } catch (error) {
            failures++;
            anomaly(`${COLUMN[name]}, ${scenario.name} (round ${round + 1}) failed: ${describe(error)}`);
          }
          log(`round ${round + 1}/${ROUNDS} ${scenario.name.padEnd(22)} ${COLUMN[name].padEnd(15)} ${Math.round(performance.now() - started)} ms`);
        }
      }
      for (const scenario of h2Scenarios) {
        const available = H2_NAMES.filter((name) => h2Paths[name]);
        const order = available.map((_name, i) => available[(i + round) % available.length]!);
        for (const name of order) {
          const started = performance.now();
          const before = await upstreamConnections();
          try {
            await withTimeout(scenario.run(h2Paths[name]!, name), SCENARIO_TIMEOUT_MS, `${name} ${scenario.name}`);
          } catch (error) {
            failures++;
            anomaly(`${H2_COLUMN[name]}, ${scenario.name} (round ${round + 1}) failed: ${describe(error)}`);
          }
          const after = await upstreamConnections();
          log(
            `round ${round + 1}/${ROUNDS} ${scenario.name.padEnd(22)} ${H2_COLUMN[name].padEnd(16)} ${Math.round(performance.now() - started)} ms` +
              ` (new upstream TLS connections: h2 port ${after.h2 - before.h2}, HTTP/1.1 port ${after.http1 - before.http1})`,
          );
        }
      }
    }

    // Correctness cross-checks, reported as anomalies when off.
    if (targets.llm) await withTimeout(checkGuardActive(targets.llm), 10_000, "llm guard check").catch((error: unknown) => anomaly(`llm guard check failed: ${describe(error)}`));
    const mitmStats = await mitm.ask<ChildMessage & { errors: Record<string, number>; firstErrors: string[] }>({ type: "stats" });
    const mitmErrorCount = Object.values(mitmStats.errors).reduce((a, b) => a + b, 0);
    const portcullisStats = await certificateStats(portcullis);
    const cliCpu = clis.map((cli) => ({ name: cli.name, cpu: cli.cpu() }));

    log("closing");
    await Promise.all([...children.map((child) => child.close()), ...clis.map((cli) => cli.close()), mitmproxy?.close()]);
    children.length = 0;
    for (const cli of clis) {
      const output = cli.output();
      if (output) anomaly(`${cli.name} printed: ${output}`);
    }
    clis.length = 0;
    const mitmproxyErrors = mitmproxy?.errors();
    if (mitmproxy) {
      const output = mitmproxy.output();
      if (output) anomaly(`mitmproxy printed: ${output}`);
      if (mitmproxyErrors?.count === undefined) anomaly("mitmproxy did not report its error count on exit");
    }

    const auditLines: Partial<Record<TargetName, number>> = {};
    for (const name of ["portcullis", "workers1", "workers2", "llm"] as const) {
      if (!targets[name]) continue;
      let lines: string[] = [];
      try {
        lines = readFileSync(auditLog(work, name), "utf8").split("\n").filter(Boolean);
      } catch {
        // No audit file: reported below.
      }
      auditLines[name] = lines.length;
      const expected = sent[name].requests + sent[name].ws;
      if (lines.length !== expected) {
        anomaly(`${COLUMN[name]} audit log has ${lines.length} lines for ${sent[name].requests} HTTP requests + ${sent[name].ws} WebSocket sessions (${expected} expected)`);
      }
      let broken = 0;
      for (const line of lines) {
        try {
          JSON.parse(line);
        } catch {
          broken++;
        }
      }
      if (broken) anomaly(`${COLUMN[name]} audit log: ${broken} of ${lines.length} lines are not JSON (interleaved writes?)`);
      if (name === "portcullis") {
        // The h2 paths by what portcullis wrote: client h2 to the h2 ports, to the HTTP/1.1 port.
        const h2Ports = new Set([upstreamH2Port, upstreamGrpcPort]);
        const tally = { h2h2: 0, h2h1: 0 };
        for (const line of lines) {
          try {
            const record = JSON.parse(line) as { http_version?: string; upstream_version?: string; port?: number };
            if (record.http_version !== "2") continue;
            if (record.upstream_version === "2" && h2Ports.has(record.port ?? 0)) tally.h2h2++;
            else if (record.upstream_version === "1.1" && record.port === upstreamPort) tally.h2h1++;
          } catch {
            // Counted above.
          }
        }
        if (tally.h2h2 !== h2Sent.portcullis) anomaly(`portcullis audit log: ${tally.h2h2} lines with h2 on both sides for ${h2Sent.portcullis} h2 requests sent to the h2 upstreams`);
        if (tally.h2h1 !== h2Sent.portcullis_h1) anomaly(`portcullis audit log: ${tally.h2h1} lines with h2 client and HTTP/1.1 upstream for ${h2Sent.portcullis_h1} h2 requests sent to the HTTP/1.1 upstream`);
      }
    }

    printReport(startedAt, policy.withNetwork, stale, {
      portcullisStats,
      auditLines,
      cliCpu,
      mitmErrors: mitmStats.errors,
      mitmErrorCount,
      mitmFirst: mitmStats.firstErrors,
      mitmproxyVersion: mitmproxy?.version,
      mitmproxyErrors,
    });
    return failures ? 1 : 0;
  } finally {
    await Promise.all([
      ...children.map((child) => child.close().catch(() => null)),
      ...clis.map((cli) => cli.close().catch(() => null)),
      mitmproxy?.close().catch(() => null),
    ]);
    killAllChildren();
    if (process.env.BENCH_KEEP_WORK === "1") log(`BENCH_KEEP_WORK=1: left ${work} (policies, audit logs, CAs) in place`);
    else rmSync(work, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Report.

const value = (target: TargetName, metric: Metric) => median(results[target][metric] ?? []);

function printReport(
  startedAt: Date,
  withNetwork: boolean,
  stale: string | undefined,
  extra: {
    portcullisStats: CertificateStats;
    auditLines: Partial<Record<TargetName, number>>;
    cliCpu: { name: string; cpu: ReturnType<CliHandle["cpu"]> }[];
    mitmErrors: Record<string, number>;
    mitmErrorCount: number;
    mitmFirst: string[];
    mitmproxyVersion: string | undefined;
    mitmproxyErrors: { count: number | undefined; first: string[] } | undefined;
  },
): void {
  const cpuList = cpus();
  const lines: string[] = [];
  lines.push(`## portcullis benchmark — ${startedAt.toISOString().slice(0, 10)}`);
  lines.push("");
  lines.push(
    `Node ${process.version}, ${process.platform}/${process.arch}, ${cpuList.length} × ${cpuList[0]?.model.trim() ?? "unknown CPU"}; ` +
      `median of ${ROUNDS} round${ROUNDS > 1 ? "s" : ""}${QUICK ? " (BENCH_QUICK: reduced counts)" : ""}; ` +
      `portcullis as built in dist/, policy ${withNetwork ? "with a network allow rule" : "without network rules (this build has none)"}, audit log to a file; ` +
      `the run took ${Math.round((Date.now() - startedAt.getTime()) / 1000)} s.` +
      (stale ? ` **dist/ is older than ${stale}**: the build measured may lack the latest source edits.` : ""),
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

  lines.push("");
  lines.push(`### \`portcullis start --workers N\` (the CLI, dist/cli.js), same rounds, same direct column`);
  lines.push("");
  lines.push("| scenario | direct | 1 worker | 2 workers | 2 workers / 1 worker | 1 worker/direct | 2 workers/direct |");
  lines.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const row of WORKER_ROWS) {
    const d = value("direct", row.metric);
    const w1 = value("workers1", row.metric);
    const w2 = value("workers2", row.metric);
    lines.push(`| ${row.label} | ${formatNumber(d)} | ${formatNumber(w1)} | ${formatNumber(w2)} | ${formatRatio(w2 / w1)} | ${formatRatio(w1 / d)} | ${formatRatio(w2 / d)} |`);
  }
  const cpuText = extra.cliCpu
    .filter((entry) => entry.cpu)
    .map(({ name, cpu }) => `${name}: process ${cpu!.primary.toFixed(1)} s${cpu!.workers.length ? `, workers ${cpu!.workers.map((s) => `${s.toFixed(1)} s`).join(" + ")}` : ""}`);
  if (cpuText.length) lines.push("", `CPU used over the whole run (user + system): ${cpuText.join("; ")}.`);

  const direct = ttftSamples.direct;
  const guarded = ttftSamples.llm;
  lines.push("");
  lines.push(
    `### Time to first text token: streamed \`POST /v1/messages\` (text/event-stream), warm keep-alive connection, ` +
      `${direct?.first.length ?? 0} + ${guarded?.first.length ?? 0} requests (all rounds pooled)`,
  );
  lines.push("");
  lines.push("portcullis here has an `llm:` rule for `*.bench.test`, so the stream goes through its SSE guard. Target: added ≤ 5 ms.");
  lines.push("");
  lines.push("| measure | direct | portcullis + llm rule | added (portcullis − direct) |");
  lines.push("| --- | ---: | ---: | ---: |");
  const pooled = (samples: number[] | undefined, p: number) => (samples?.length ? percentile([...samples].sort((a, b) => a - b), p) : NaN);
  for (const [label, key, p] of [
    ["first text event, p50 — ms ↓", "first", 50],
    ["first text event, p90 — ms ↓", "first", 90],
    ["whole stream (ends ~10 ms after the first event), p50 — ms ↓", "whole", 50],
  ] as const) {
    const d = pooled(direct?.[key], p);
    const g = pooled(guarded?.[key], p);
    lines.push(`| ${label} | ${formatNumber(d)} | ${formatNumber(g)} | ${formatNumber(g - d)} |`);
  }

  printH2Report(lines, extra.mitmproxyVersion);

  // The issue's targets, judged on this run's medians.
  const ratio = (metric: Metric, lowerIsBetter = false) => (lowerIsBetter ? value("direct", metric) / value("portcullis", metric) : value("portcullis", metric) / value("direct", metric));
  const ttftAdded = pooled(guarded?.first, 50) - pooled(direct?.first, 50);
  const h2Rps = h2Value("portcullis", "h2_rps");
  const h2DlRatio = h2Value("portcullis", "h2_dl") / h2Value("direct", "h2_dl");
  const targetsMet: [string, string, boolean][] = [
    ["keep-alive req/s ≥ 0.5× direct", formatRatio(ratio("ka_rps")), ratio("ka_rps") >= 0.5],
    ["keep-alive req/s ≥ 2× http-mitm-proxy", formatRatio(value("portcullis", "ka_rps") / value("mitm", "ka_rps")), value("portcullis", "ka_rps") / value("mitm", "ka_rps") >= 2],
    ["new tunnel tunnels/s ≥ 0.8× direct", formatRatio(ratio("tun_rps")), ratio("tun_rps") >= 0.8],
    ["download MB/s ≥ 0.7× direct", formatRatio(ratio("dl_mbps")), ratio("dl_mbps") >= 0.7],
    ["WSS echo msgs/s ≥ 0.5× direct", formatRatio(ratio("ws_mps")), ratio("ws_mps") >= 0.5],
    ["first-seen host adds ≤ 10 ms", `${formatNumber(value("portcullis", "fs_added"))} ms`, value("portcullis", "fs_added") <= 10],
    ["first text token adds ≤ 5 ms (p50)", `${formatNumber(ttftAdded)} ms`, ttftAdded <= 5],
    [
      "h2 multiplexed req/s through portcullis (h2↔h2) ≥ its HTTP/1.1 keep-alive req/s",
      `${formatNumber(h2Rps)} vs ${formatNumber(value("portcullis", "ka_rps"))}`,
      h2Rps >= value("portcullis", "ka_rps"),
    ],
    ["h2 download ratio (h2↔h2/direct) ≥ HTTP/1.1 download ratio", `${formatRatio(h2DlRatio)} vs ${formatRatio(ratio("dl_mbps"))}`, h2DlRatio >= ratio("dl_mbps")],
  ];
  lines.push("");
  lines.push("Targets (this run's medians): " + targetsMet.map(([what, got, met]) => `${what}: ${got} ${met ? "met" : "**not met**"}`).join("; ") + ".");

  lines.push("");
  const audit = (["portcullis", "workers1", "workers2", "llm"] as const)
    .filter((name) => extra.auditLines[name] !== undefined)
    .map((name) => `${COLUMN[name]} ${extra.auditLines[name]}`)
    .join(", ");
  lines.push(
    `portcullis certificates: ${extra.portcullisStats.forged} forged, ${extra.portcullisStats.hits} cache hits; audit log lines: ${audit}. ` +
      `http-mitm-proxy reported ${extra.mitmErrorCount} errors${extra.mitmErrorCount ? ` (${Object.entries(extra.mitmErrors).map(([k, v]) => `${k} ×${v}`).join(", ")})` : ""}.` +
      (extra.mitmproxyErrors
        ? ` mitmproxy reported ${extra.mitmproxyErrors.count ?? "?"} failed flows${extra.mitmproxyErrors.first.length ? ` (the first: ${extra.mitmproxyErrors.first.join("; ")})` : ""}.`
        : ""),
  );
  if (anomalies.length) {
    lines.push("");
    lines.push("Anomalies:");
    for (const message of anomalies) lines.push(`- ${message}`);
  }
  process.stdout.write(`${lines.join("\n")}\n`);
  // Every round's value, to judge the noise behind the medians.
  const perRound = (metric: Metric, names: TargetName[]) =>
    log(`per round: ${metric.padEnd(10)} ${names.map((target) => `${COLUMN[target]} ${(results[target][metric] ?? []).map(formatNumber).join(" / ")}`).join(" | ")}`);
  for (const row of ROWS) perRound(row.metric, TARGETS);
  for (const row of WORKER_ROWS) perRound(row.metric, ["workers1", "workers2"]);
  const rounds = (values: number[] | undefined) => (values ?? []).map(formatNumber).join(" / ");
  for (const row of H2_ROWS) {
    log(`per round: ${row.metric.padEnd(11)} ${H2_NAMES.map((name) => `${H2_COLUMN[name]} ${rounds(h2Results[name][row.metric])}`).join(" | ")}`);
    if (row.cpu) log(`per round: ${`${row.metric} CPU`.padEnd(15)} ${row.cpu}: ${H2_NAMES.filter((n) => n !== "direct").map((name) => `${H2_COLUMN[name]} ${rounds(h2Cpu[name][row.metric])}`).join(" | ")}`);
  }
  for (const name of ["portcullis", "mitm"] as const) {
    log(`per round: HTTP/1.1 CPU ${COLUMN[name]}: keep-alive µs/req ${rounds(h1Cpu[name]?.ka)} | download µs/MB ${rounds(h1Cpu[name]?.dl)}`);
  }
  for (const metric of ["ttft_p50", "ttft_p90", "stream_p50"] as const) perRound(metric, ["direct", "llm"]);
  const w1 = results.workers1.ka_rps ?? [];
  const w2 = results.workers2.ka_rps ?? [];
  const t1 = results.workers1.tun_rps ?? [];
  const t2 = results.workers2.tun_rps ?? [];
  log(`per round: 2 workers / 1 worker keep-alive ${w2.map((v, i) => formatRatio(v / w1[i]!)).join(" / ")} | new tunnel ${t2.map((v, i) => formatRatio(v / t1[i]!)).join(" / ")}`);
  const d50 = results.direct.ttft_p50 ?? [];
  log(`per round: first text token added (p50) ${(results.llm.ttft_p50 ?? []).map((v, i) => `${formatNumber(v - d50[i]!)} ms`).join(" / ")}`);
}

const h2Value = (name: H2Name, metric: H2Metric) => median(h2Results[name][metric] ?? []);

/** Lowest–highest of the values, or "—". */
function range(values: number[]): string {
  const finite = values.filter((v) => Number.isFinite(v));
  if (!finite.length) return "—";
  return `${formatNumber(Math.min(...finite))}–${formatNumber(Math.max(...finite))}`;
}

/** The per-round quotient a/b of two paths' values (rounds in which both produced one). */
function perRoundRatios(a: H2Name, b: H2Name, metric: H2Metric): number[] {
  const x = h2Results[a][metric] ?? [];
  const y = h2Results[b][metric] ?? [];
  // A round that failed for one of the two leaves the rounds unaligned: no per-round ratio then.
  if (x.length !== y.length) return [];
  return x.map((v, i) => v / y[i]!).filter((v) => Number.isFinite(v));
}

function printH2Report(lines: string[], mitmproxyVersion: string | undefined): void {
  const proxies = H2_NAMES.filter((name) => name !== "direct");
  lines.push("");
  lines.push(`### HTTP/2 and gRPC: h2 client, same rounds`);
  lines.push("");
  lines.push(
    "direct: node:http2 (gRPC: grpc-js) to the upstream's h2 port (gRPC: its grpc-js server). " +
      "portcullis h2↔h2: the portcullis instance of the main table, h2 to the client and to the upstream. " +
      "portcullis h2→h1: the same instance, h2 client, the HTTP/1.1-only upstream of the main table (gRPC answered by hand over HTTP/1.1: chunked body, grpc-status in trailers). " +
      `mitmproxy: ${mitmproxyVersion ? `mitmdump ${mitmproxyVersion}` : "not run"}, streaming bodies, h2 both sides. ` +
      "Proxy CPU: user + system of the proxy process over the measured part only (/proc, 10 ms ticks), per unit; median of the rounds.",
  );
  lines.push("");
  lines.push(
    "| scenario | direct | portcullis h2↔h2 | portcullis h2→h1 | mitmproxy | h2↔h2/direct | h2→h1/direct | mitmproxy/direct | h2↔h2/mitmproxy | proxy CPU: h2↔h2 / h2→h1 / mitmproxy |",
  );
  lines.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const row of H2_ROWS) {
    const [d, p2, p1, m] = H2_NAMES.map((name) => h2Value(name, row.metric)) as [number, number, number, number];
    const cpu = row.cpu ? `${proxies.map((name) => formatNumber(median(h2Cpu[name][row.metric] ?? []))).join(" / ")} ${row.cpu}` : "";
    lines.push(
      `| ${row.label} | ${formatNumber(d)} | ${formatNumber(p2)} | ${formatNumber(p1)} | ${formatNumber(m)} | ` +
        `${formatRatio(p2 / d)} | ${formatRatio(p1 / d)} | ${formatRatio(m / d)} | ${formatRatio(p2 / m)} | ${cpu} |`,
    );
  }
  lines.push("");
  lines.push(`Spread over the ${ROUNDS} round${ROUNDS > 1 ? "s" : ""} (lowest–highest):`);
  lines.push("");
  lines.push("| scenario | direct | portcullis h2↔h2 | portcullis h2→h1 | mitmproxy | h2↔h2/direct | h2→h1/direct | h2↔h2/mitmproxy |");
  lines.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const row of H2_ROWS) {
    const ratios = [perRoundRatios("portcullis", "direct", row.metric), perRoundRatios("portcullis_h1", "direct", row.metric), perRoundRatios("portcullis", "mitmproxy", row.metric)];
    lines.push(
      `| ${row.label} | ${H2_NAMES.map((name) => range(h2Results[name][row.metric] ?? [])).join(" | ")} | ` +
        `${ratios.map((r) => (r.length ? `${Math.min(...r).toFixed(2)}–${Math.max(...r).toFixed(2)}×` : "—")).join(" | ")} |`,
    );
  }
  const h1 = (name: TargetName, key: "ka" | "dl") => formatNumber(median(h1Cpu[name]?.[key] ?? []));
  lines.push("");
  lines.push(
    `For comparison, proxy CPU in the HTTP/1.1 rows (median of the rounds): portcullis ${h1("portcullis", "ka")} µs per keep-alive request, ${h1("portcullis", "dl")} µs/MB downloaded; ` +
      `http-mitm-proxy ${h1("mitm", "ka")} µs per request, ${h1("mitm", "dl")} µs/MB.`,
  );
}

/** The run's work dir, for the signal handler below. */
let workDir: string | undefined;
// Stopped from outside (Ctrl-C, SIGTERM): Node would exit without its 'exit' event, leaving the
// children (the CLI's workers, mitmdump) running.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping every child process`);
    killAllChildren();
    if (workDir && process.env.BENCH_KEEP_WORK !== "1") rmSync(workDir, { recursive: true, force: true });
    process.exit(130);
  });
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
