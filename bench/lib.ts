// Small helpers shared by the benchmark driver and its child processes.
import { fork, type ChildProcess } from "node:child_process";
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Dispatcher } from "undici";

/** Every host name the benchmark uses ends in this suffix and resolves to 127.0.0.1. */
export const BENCH_DOMAIN = "bench.test";

export function isBenchHost(hostname: string): boolean {
  const name = hostname.toLowerCase().replace(/\.$/, "");
  return name === BENCH_DOMAIN || name.endsWith(`.${BENCH_DOMAIN}`);
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** A dns.lookup replacement: *.bench.test is 127.0.0.1, everything else goes to the system resolver. */
export function benchLookup(hostname: string, options: LookupOptions | number | LookupCallback, callback?: LookupCallback): void {
  const cb = (typeof options === "function" ? options : callback) as LookupCallback;
  const opts: LookupOptions = typeof options === "object" ? options : typeof options === "number" ? { family: options } : {};
  if (isBenchHost(hostname)) {
    if (opts.all) cb(null, [{ address: "127.0.0.1", family: 4 }]);
    else cb(null, "127.0.0.1", 4);
    return;
  }
  dnsLookup(hostname, opts, (error, address, family) => cb(error, address as string | LookupAddress[], family));
}

// ---------------------------------------------------------------------------------------------
// Child processes, spoken to over the IPC channel.

export type ChildMessage = { type: string; [key: string]: unknown };
/** The ready message of a child that is a proxy (portcullis-child.ts, mitm-child.ts, peers/node-floor.ts): where it listens and its CA. */
export type ProxyReady = ChildMessage & { port: number; caPem: string };

export interface ChildHandle<Ready extends ChildMessage = ChildMessage> {
  name: string;
  process: ChildProcess;
  ready: Ready;
  /** Sends a request and resolves with the first reply of the same type. */
  ask<T extends ChildMessage>(message: ChildMessage, timeoutMs?: number): Promise<T>;
  /** Asks the child to close its servers and exit; kills it if it does not within timeoutMs. */
  close(timeoutMs?: number): Promise<number | null>;
}

const running = new Set<ChildProcess>();

/** Registers a child started elsewhere (not through startChild) for the last-resort kill. */
export function trackChild(child: ChildProcess): void {
  running.add(child);
  child.once("exit", () => running.delete(child));
}

const cleanups = new Set<() => void>();

/** A last-resort step of killAllChildren (squid's helper processes, which are its children, not ours). */
export function onKillAll(cleanup: () => void): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/** Last resort: nothing the benchmark started outlives it, whatever way it ends. */
export function killAllChildren(): void {
  for (const cleanup of cleanups) {
    try {
      cleanup();
    } catch {
      // Best effort.
    }
  }
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}
process.once("exit", killAllChildren);

export function benchFile(name: string): string {
  return fileURLToPath(new URL(name, import.meta.url));
}

/**
 * Forks `node --import tsx <script>` with an IPC channel and waits for its {type:"ready"} message.
 * The child's stdout/stderr are inherited (children keep quiet unless something is wrong).
 */
export function startChild<Ready extends ChildMessage>(
  name: string,
  script: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; nodeFlags?: string[] } = {},
): Promise<ChildHandle<Ready>> {
  const child = fork(benchFile(script), args, {
    execArgv: ["--import", "tsx", ...(options.nodeFlags ?? [])],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    env: { ...process.env, ...options.env },
  });
  running.add(child);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => (running.delete(child), resolve(code))));

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${name}: not ready within ${options.timeoutMs ?? 60_000} ms`));
    }, options.timeoutMs ?? 60_000);
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`${name}: exited with ${code} before it was ready`));
    };
    child.once("exit", onExit);
    child.once("message", (message: ChildMessage) => {
      clearTimeout(timer);
      child.off("exit", onExit);
      if (message.type !== "ready") {
        child.kill("SIGKILL");
        reject(new Error(`${name}: failed to start: ${JSON.stringify(message)}`));
        return;
      }
      resolve({
        name,
        process: child,
        ready: message as Ready,
        ask<T extends ChildMessage>(request: ChildMessage, timeoutMs = 10_000): Promise<T> {
          return new Promise((resolveAsk, rejectAsk) => {
            const askTimer = setTimeout(() => {
              child.off("message", onMessage);
              rejectAsk(new Error(`${name}: no reply to ${request.type} within ${timeoutMs} ms`));
            }, timeoutMs);
            const onMessage = (reply: ChildMessage) => {
              if (reply.type !== request.type) return;
              clearTimeout(askTimer);
              child.off("message", onMessage);
              resolveAsk(reply as T);
            };
            child.on("message", onMessage);
            child.send(request);
          });
        },
        async close(timeoutMs = 10_000): Promise<number | null> {
          if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
          if (child.connected) child.send({ type: "close" });
          const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
          const code = await exited;
          clearTimeout(timer);
          return code;
        },
      });
    });
  });
}

/** Child side: report readiness and serve requests from the parent; `close` ends the process. */
export function serveParent(ready: ChildMessage, handlers: Record<string, () => Promise<ChildMessage> | ChildMessage>, close: () => Promise<void>): void {
  const send = process.send?.bind(process);
  if (!send) throw new Error("this script is a benchmark child; run bench/run.ts");
  let closing = false;
  const shutdown = () => {
    if (closing) return;
    closing = true;
    const force = setTimeout(() => process.exit(1), 8_000);
    force.unref();
    close().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`close failed: ${String(error)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("message", (message: ChildMessage) => {
    if (message.type === "close") return shutdown();
    const handler = handlers[message.type];
    if (!handler) return;
    void Promise.resolve(handler()).then((reply) => send({ ...reply, type: message.type }));
  });
  // The parent died or let go: do not linger.
  process.on("disconnect", shutdown);
  process.on("SIGTERM", shutdown);
  send(ready);
}

/** utime + stime (cpu), and each alone, of a process in seconds, and its parent pid, from /proc (Linux; undefined elsewhere). */
export function procStat(pid: number): { ppid: number; cpu: number; user: number; system: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    // After the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime (clock ticks of 10 ms)
    const user = Number(fields[11]) / 100;
    const system = Number(fields[12]) / 100;
    return { ppid: Number(fields[1]), cpu: user + system, user, system };
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) a process has used so far; NaN when /proc cannot tell. */
export function cpuSeconds(pid: number | undefined): number {
  return pid === undefined ? NaN : (procStat(pid)?.cpu ?? NaN);
}

/** The pids whose parent is `parent` (from /proc; none elsewhere). */
export function childPids(parent: number): number[] {
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

/** A free port on 127.0.0.1: listen(0) on a probe socket, note the port, close it. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting.

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function median(values: number[]): number {
  const finite = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  if (finite.length === 0) return NaN;
  const mid = Math.floor(finite.length / 2);
  return finite.length % 2 ? finite[mid]! : (finite[mid - 1]! + finite[mid]!) / 2;
}

/** Three significant digits, no exponent, "—" for not-a-number. */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return "—";
  const abs = Math.abs(value);
  if (abs >= 100) return Math.round(value).toLocaleString("en-US");
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toFixed(3);
}

export function formatRatio(value: number): string {
  return Number.isFinite(value) && value > 0 ? `${value.toFixed(2)}×` : "—";
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

/** An error as a line for the report: its code, message and causes. */
export function describeError(error: unknown): string {
  const e = error as NodeJS.ErrnoException & { cause?: unknown };
  const cause = e?.cause ? ` (cause: ${describeError(e.cause)})` : "";
  return `${e?.code ? `${e.code}: ` : ""}${e?.message ?? String(error)}${cause}`;
}

export interface TimedRuns {
  /** Latency of each call that succeeded, in ms, sorted. */
  latencies: number[];
  elapsedMs: number;
  errors: number;
  firstError: string;
}

/**
 * `total` calls of `once`, `concurrency` of them in flight at all times. A worker stops early
 * when `giveUp()` says so after a failure (its connection is gone).
 */
export async function timedRuns(total: number, concurrency: number, once: () => Promise<void>, giveUp: () => boolean = () => false): Promise<TimedRuns> {
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
        await once();
        latencies.push(performance.now() - t0);
      } catch (error) {
        if (errors++ === 0) firstError = describeError(error);
        if (giveUp()) break;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = performance.now() - started;
  latencies.sort((a, b) => a - b);
  return { latencies, elapsedMs, errors, firstError };
}

/** A benchmark peer running as a child process (squid has its own accounting, see squid.ts). */
export interface PeerHandle {
  port: number;
  pid: number;
  caPem: string;
  version: string;
  /** Failures the peer itself counted (502s, failed flows), known once it has exited, and the first few. */
  errors(): { count: number | undefined; first: string[] };
  /** What it printed besides its own report lines, bounded. */
  output(): string;
  close(): Promise<void>;
}

/** The policy the CPU probes (cpu-split, instructions) run portcullis on: the main bench's shape, one allow rule for the upstream's port. */
export function probePolicy(dir: string, upstreamCaFile: string, port: number): string {
  return [
    "version: 1",
    `ca: { dir: ${JSON.stringify(join(dir, "ca"))} }`,
    `log: { audit: ${JSON.stringify(join(dir, "audit.log"))}, level: warn }`,
    `upstream: { trust: [${JSON.stringify(upstreamCaFile)}], resolve: { ${JSON.stringify(BENCH_DOMAIN)}: 127.0.0.1 } }`,
    "network:",
    "  default: deny",
    "  private_destinations: deny",
    '  allow_ips: ["127.0.0.1/32"]',
    `  rules: [{ name: bench, action: allow, hosts: [${JSON.stringify(BENCH_DOMAIN)}], ports: [${port}] }]`,
    "",
  ].join("\n");
}

/**
 * `count` keep-alive GETs of /small spread over `connections` workers; anything but a 200 throws,
 * naming `who`. With `reset`, each request on a connection of its own (a new tunnel through a proxy).
 */
export async function smallGets(dispatcher: Dispatcher, origin: string, connections: number, count: number, who: string, reset = false): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (next++ < count) {
        const { statusCode, body } = await dispatcher.request({ origin, path: "/small", method: "GET", reset });
        await body.arrayBuffer();
        if (statusCode !== 200) throw new Error(`${who}: GET /small answered ${statusCode}`);
      }
    }),
  );
}
