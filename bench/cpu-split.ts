// Where a keep-alive request's CPU goes: portcullis (`dist/cli.js start`, the bench's main
// policy shape) against the Go peer and the Node floor (bench/peers/node-floor.ts: Node's own
// http.Server and https.request with nothing else), each its user and system time per request
// from /proc, rounds interleaved. With BENCH_STRACE=1 also the system calls per request
// (`strace -c -f` attached to the proxy for the measured requests; slower, counts only).
// BENCH_BASELINE=DIR[,DIR...] adds a column for each other build's cli.js (DIR/cli.js, e.g. a copy
// of dist/ from an earlier commit, kept under the repository so its packages resolve): an A/B in one run.
// BENCH_NODE_FLAGS="--flag ...;--other" adds a column for this build started with those node flags.
// BENCH_SCENARIO=download measures a 100 MiB download on one connection instead: CPU per MiB.
// BENCH_SCENARIO=tunnel: one GET per new tunnel (CONNECT, a full TLS handshake, no session
// resumption), 8 at once, BENCH_REQUESTS tunnels a round (default 2,000) after 1,000 warm-up (a
// process' CPU a tunnel still falls for its first few thousand: V8's compiler): CPU per tunnel.
// Usage: node --import tsx bench/cpu-split.ts   (after `npm run build`; the Go peer needs golang-go)
//        BENCH_ROUNDS=3 BENCH_REQUESTS=20000 BENCH_STRACE=1 BENCH_SCENARIO=download …
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { ProxyAgent } from "undici";
import { buildGoMitm, goVersion, startGoMitm } from "./go-mitm.js";
import { benchFile, BENCH_DOMAIN, log, median, probePolicy, procStat, smallGets, startChild, trackChild, killAllChildren, type ChildMessage, type ProxyReady } from "./lib.js";

const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3) || 3);
const DOWNLOAD = process.env.BENCH_SCENARIO === "download";
const TUNNEL = process.env.BENCH_SCENARIO === "tunnel";
const DEFAULT_REQUESTS = TUNNEL ? 2_000 : 20_000;
const REQUESTS = Math.max(TUNNEL ? 100 : 1000, Number(process.env.BENCH_REQUESTS ?? DEFAULT_REQUESTS) || DEFAULT_REQUESTS);
const CONNECTIONS = 8;
const STRACE = process.env.BENCH_STRACE === "1";
const DOWNLOAD_MIB = 100;
/** What one sample's CPU is divided by: requests, or MiB downloaded. */
const UNITS = DOWNLOAD ? DOWNLOAD_MIB : REQUESTS;
const UNIT = DOWNLOAD ? "MiB" : TUNNEL ? "tunnel" : "request";

interface Proxy {
  name: string;
  pid: number;
  port: number;
  caPem: string;
  close(): Promise<void>;
}

interface Sample {
  rate: number;
  userUs: number;
  sysUs: number;
  syscalls?: Map<string, number>;
}

/** User and system CPU time in µs. */
function cpuTimes(pid: number): { user: number; sys: number } {
  const stat = procStat(pid);
  if (!stat) throw new Error(`no /proc/${pid}/stat: this probe needs Linux`);
  return { user: stat.user * 1e6, sys: stat.system * 1e6 };
}

function waitForLine(child: ChildProcess, stream: "stdout" | "stderr", pattern: RegExp, what: string): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`${what}: no ready line within 30 s: ${seen.slice(0, 400)}`)), 30_000);
    child[stream]!.setEncoding("utf8");
    child[stream]!.on("data", (text: string) => {
      seen += text;
      const match = pattern.exec(seen);
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    });
    child.once("exit", (code) => reject(new Error(`${what} exited (${code}) before it was ready: ${seen.slice(0, 400)}`)));
  });
}

function stopper(child: ChildProcess): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
}

async function startPortcullis(work: string, upstreamCaFile: string, port: number, name = "portcullis", cli = benchFile("../dist/cli.js"), nodeFlags: string[] = []): Promise<Proxy> {
  const dir = join(work, name.replace(/\W+/g, "-"));
  const policy = join(dir, "policy.yaml");
  mkdirSync(dir, { recursive: true });
  writeFileSync(policy, probePolicy(dir, upstreamCaFile, port));
  const child = spawn(process.execPath, [...nodeFlags, cli, "start", "--policy", policy, "--listen", "127.0.0.1:0"], { stdio: ["ignore", "ignore", "pipe"] });
  trackChild(child);
  const [, listening] = await waitForLine(child, "stderr", /listening on [\d.]+:(\d+)/, name);
  return { name, pid: child.pid!, port: Number(listening), caPem: readFileSync(join(dir, "ca", "ca.pem"), "utf8"), close: stopper(child) };
}

async function startFloor(work: string, upstreamCaFile: string): Promise<Proxy> {
  const floor = await startChild<ProxyReady>("Node floor", "peers/node-floor.ts", [join(work, "node-floor"), upstreamCaFile]);
  return { name: "Node floor", pid: floor.process.pid!, port: floor.ready.port, caPem: floor.ready.caPem, close: async () => void (await floor.close()) };
}

async function startGo(work: string, upstreamCaFile: string, initCa: (dir: string) => Promise<void>): Promise<Proxy | undefined> {
  const version = await goVersion();
  if (!version) {
    log("no go on the PATH (apt-get install golang-go): no Go column");
    return undefined;
  }
  const [binary] = await Promise.all([buildGoMitm(work), initCa(join(work, "go-ca"))]);
  const peer = await startGoMitm(binary, join(work, "go-ca"), upstreamCaFile, version);
  return { name: "Go ReverseProxy", pid: peer.pid, port: peer.port, caPem: peer.caPem, close: () => peer.close() };
}

/** strace -c over the measured requests: calls of each system call, by name. */
async function traced(pid: number, work: string, run: () => Promise<void>): Promise<Map<string, number>> {
  const out = join(work, `strace-${pid}.txt`);
  const strace = spawn("strace", ["-c", "-f", "-p", String(pid), "-o", out], { stdio: ["ignore", "ignore", "pipe"] });
  trackChild(strace);
  await waitForLine(strace, "stderr", /attached/, "strace");
  await run();
  await new Promise<void>((resolve) => {
    strace.once("exit", () => resolve());
    strace.kill("SIGINT");
  });
  const calls = new Map<string, number>();
  for (const line of readFileSync(out, "utf8").split("\n")) {
    const fields = line.trim().split(/\s+/);
    // % time, seconds, usecs/call, calls, [errors,] syscall
    if (fields.length >= 5 && /^[\d.]+$/.test(fields[0]!) && fields.at(-1) !== "total") calls.set(fields.at(-1)!, Number(fields[3]));
  }
  return calls;
}

async function measure(proxy: Proxy, origin: string, work: string): Promise<Sample> {
  const requestTls = { ca: proxy.caPem, ...(TUNNEL ? { maxCachedSessions: 0 } : {}) };
  const dispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${proxy.port}`, requestTls, connections: CONNECTIONS, keepAliveTimeout: 60_000 });
  const download = async () => {
    const { statusCode, body } = await dispatcher.request({ origin, path: `/download?bytes=${DOWNLOAD_MIB * 1024 * 1024}`, method: "GET" });
    let received = 0;
    for await (const chunk of body) received += (chunk as Buffer).length;
    if (statusCode !== 200 || received !== DOWNLOAD_MIB * 1024 * 1024) throw new Error(`${proxy.name}: download answered ${statusCode} with ${received} bytes`);
  };
  const run = async (count: number) => {
    if (DOWNLOAD) return download();
    await smallGets(dispatcher, origin, CONNECTIONS, count, proxy.name, TUNNEL);
  };
  try {
    await run(TUNNEL ? 1_000 : 2_000);
    const before = cpuTimes(proxy.pid);
    const started = performance.now();
    let syscalls: Map<string, number> | undefined;
    if (STRACE) syscalls = await traced(proxy.pid, work, () => run(REQUESTS));
    else await run(REQUESTS);
    const elapsed = performance.now() - started;
    const after = cpuTimes(proxy.pid);
    return { rate: (UNITS / elapsed) * 1000, userUs: (after.user - before.user) / UNITS, sysUs: (after.sys - before.sys) / UNITS, syscalls };
  } finally {
    await dispatcher.close();
  }
}

const work = mkdtempSync(join(tmpdir(), "portcullis-cpu-split-"));
type Authority = typeof import("../src/ca/authority.js");
const { initCa } = (await import(new URL("../dist/ca/authority.js", import.meta.url).href)) as Authority;
const upstream = await startChild<ChildMessage & { port: number; caFile: string }>("upstream", "upstream-child.ts", [join(work, "upstream-ca"), BENCH_DOMAIN]);
const proxies: Proxy[] = [];
try {
  const origin = `https://${BENCH_DOMAIN}:${upstream.ready.port}`;
  proxies.push(await startPortcullis(work, upstream.ready.caFile, upstream.ready.port), await startFloor(work, upstream.ready.caFile));
  for (const baseline of (process.env.BENCH_BASELINE ?? "").split(",").filter(Boolean)) {
    proxies.push(await startPortcullis(work, upstream.ready.caFile, upstream.ready.port, `portcullis (${basename(resolve(baseline))})`, resolve(baseline, "cli.js")));
  }
  for (const flags of (process.env.BENCH_NODE_FLAGS ?? "").split(";").filter(Boolean)) {
    proxies.push(await startPortcullis(work, upstream.ready.caFile, upstream.ready.port, `portcullis (node ${flags})`, undefined, flags.split(" ").filter(Boolean)));
  }
  const go = await startGo(work, upstream.ready.caFile, (dir) => initCa(dir));
  if (go) proxies.push(go);
  const samples = new Map<string, Sample[]>(proxies.map((proxy) => [proxy.name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    // Rotated, so no proxy always runs first (or last) in a round.
    for (let i = 0; i < proxies.length; i++) {
      const proxy = proxies[(i + round) % proxies.length]!;
      const sample = await measure(proxy, origin, work);
      samples.get(proxy.name)!.push(sample);
      log(`round ${round + 1} ${proxy.name}: ${Math.round(sample.rate)} ${UNIT}/s, ${Math.round(sample.userUs)} + ${Math.round(sample.sysUs)} µs CPU a ${UNIT}`);
    }
  }
  const floor = median(samples.get("Node floor")!.map((s) => s.userUs + s.sysUs));
  const lines = [
    `${DOWNLOAD ? `GET /download of ${DOWNLOAD_MIB} MiB on one connection, after one warm-up download` : TUNNEL ? `One GET /small per new tunnel (CONNECT + full TLS handshake), ${CONNECTIONS} at once, ${REQUESTS} tunnels a round after 1,000 warm-up` : `Keep-alive GET /small, ${CONNECTIONS} connections, ${REQUESTS} requests a round after 2,000 warm-up`}, median of ${ROUNDS} rounds${STRACE ? " (under strace: rates and times are strace's, not comparable)" : ""}:`,
    "",
    `| proxy | ${UNIT}/s | CPU µs a ${UNIT} (user + system) | user | system | ÷ Node floor |${STRACE ? ` system calls a ${UNIT} |` : ""}`,
    `| --- | ---: | ---: | ---: | ---: | ---: |${STRACE ? " --- |" : ""}`,
  ];
  for (const proxy of proxies) {
    const list = samples.get(proxy.name)!;
    const total = median(list.map((s) => s.userUs + s.sysUs));
    let calls = "";
    if (STRACE) {
      const sums = new Map<string, number>();
      for (const sample of list) for (const [name, count] of sample.syscalls ?? []) sums.set(name, (sums.get(name) ?? 0) + count);
      const perRequest = [...sums].map(([name, count]) => [name, count / (UNITS * list.length)] as const).filter(([, n]) => n >= 0.05).sort((a, b) => b[1] - a[1]);
      const all = [...sums.values()].reduce((a, b) => a + b, 0) / (UNITS * list.length);
      calls = ` ${all.toFixed(2)}: ${perRequest.map(([name, n]) => `${name} ${n.toFixed(2)}`).join(", ")} |`;
    }
    lines.push(
      `| ${proxy.name} | ${Math.round(median(list.map((s) => s.rate)))} | ${Math.round(total)} | ${Math.round(median(list.map((s) => s.userUs)))} | ${Math.round(median(list.map((s) => s.sysUs)))} | ${(total / floor).toFixed(2)}× |${calls}`,
    );
  }
  process.stdout.write(`${lines.join("\n")}\n`);
} finally {
  await Promise.all(proxies.map((proxy) => proxy.close()));
  await upstream.close();
  killAllChildren();
  rmSync(work, { recursive: true, force: true });
}
