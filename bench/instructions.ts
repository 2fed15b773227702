// Instructions a keep-alive request costs portcullis (`dist/cli.js start`, cpu-split's policy),
// counted by valgrind's callgrind: unlike CPU time on a shared VM, a count does not move with
// what the rest of the machine does. It still moves with when the garbage collector and the
// compiler threads run (one build: 547k to 682k a request over runs of 3,000, bench/RESULTS.md):
// compare builds over several runs each. Only the measured requests are counted
// (instrumentation switched on and off around them with callgrind_control).
// Usage: node --import tsx bench/instructions.ts   (after `npm run build`; needs valgrind)
//        BENCH_CLI=scratch/dist-old/cli.js BENCH_WARMUP=3000 BENCH_REQUESTS=3000 BENCH_NODE_FLAGS="--single-threaded" …
//        BENCH_SCENARIO=download …   (instructions a MiB of one connection's downloads)
//        BENCH_SCENARIO=tunnel …     (instructions a new tunnel: CONNECT, a full TLS handshake, one GET)
import { execFileSync, spawn } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ProxyAgent } from "undici";
import { benchFile, BENCH_DOMAIN, killAllChildren, log, probePolicy, smallGets, startChild, trackChild, type ChildMessage } from "./lib.js";

const WARMUP = Math.max(100, Number(process.env.BENCH_WARMUP ?? 3000) || 3000);
const REQUESTS = Math.max(100, Number(process.env.BENCH_REQUESTS ?? 3000) || 3000);
/** BENCH_SCENARIO=download: one connection's downloads instead, BENCH_WARMUP and BENCH_REQUESTS in MiB (default 8 and 32). */
const DOWNLOAD = process.env.BENCH_SCENARIO === "download";
/** BENCH_SCENARIO=tunnel: one GET per new tunnel, no TLS session resumption (default 200 warm-up, 500 counted). */
const TUNNEL = process.env.BENCH_SCENARIO === "tunnel";
const WARMUP_UNITS = DOWNLOAD ? Math.max(1, Number(process.env.BENCH_WARMUP ?? 8) || 8) : TUNNEL ? Math.max(10, Number(process.env.BENCH_WARMUP ?? 200) || 200) : WARMUP;
const UNITS = DOWNLOAD ? Math.max(1, Number(process.env.BENCH_REQUESTS ?? 32) || 32) : TUNNEL ? Math.max(10, Number(process.env.BENCH_REQUESTS ?? 500) || 500) : REQUESTS;
const UNIT = DOWNLOAD ? "MiB downloaded" : TUNNEL ? "new tunnel" : "keep-alive request";
const CLI = process.env.BENCH_CLI ? resolve(process.env.BENCH_CLI) : benchFile("../dist/cli.js");
/** BENCH_TARGET=floor counts bench/peers/node-floor.ts instead: the least a Node MITM costs. */
const FLOOR = process.env.BENCH_TARGET === "floor";
/** BENCH_KEEP=DIR keeps the callgrind files there, for callgrind_annotate. */
const KEEP = process.env.BENCH_KEEP ? resolve(process.env.BENCH_KEEP) : undefined;
const CONNECTIONS = 8;
/** Node flags for the counted process, e.g. "--single-threaded" (no compiler or GC threads: a steadier count). */
const NODE_FLAGS = (process.env.BENCH_NODE_FLAGS ?? "").split(" ").filter(Boolean);

const work = mkdtempSync(join(tmpdir(), "portcullis-instructions-"));
const upstream = await startChild<ChildMessage & { port: number; caFile: string }>("upstream", "upstream-child.ts", [join(work, "upstream-ca"), BENCH_DOMAIN]);
const dir = join(work, "portcullis");
mkdirSync(dir);
const policy = join(dir, "policy.yaml");
writeFileSync(policy, probePolicy(dir, upstream.ready.caFile, upstream.ready.port));
const counted = FLOOR ? ["--import", "tsx", benchFile("peers/node-floor.ts"), join(dir, "floor-ca"), upstream.ready.caFile] : [CLI, "start", "--policy", policy, "--listen", "127.0.0.1:0"];
const what = FLOOR ? "the Node floor" : CLI;
const proxy = spawn("valgrind", ["--tool=callgrind", "--instr-atstart=no", `--callgrind-out-file=${join(work, "callgrind.%p")}`, process.execPath, ...NODE_FLAGS, ...counted], {
  // The floor says it listens on stdout, portcullis on stderr.
  stdio: ["ignore", FLOOR ? "pipe" : "ignore", "pipe"],
});
trackChild(proxy);
try {
  const port = await new Promise<number>((resolvePort, reject) => {
    let seen = "";
    const said = FLOOR ? proxy.stdout! : proxy.stderr!;
    said.setEncoding("utf8");
    said.on("data", (text: string) => {
      seen += text;
      const match = /listening on [\d.]+:(\d+)/.exec(seen);
      if (match) resolvePort(Number(match[1]));
    });
    proxy.once("exit", (code) => reject(new Error(`${what} under valgrind exited (${code}) before it was ready: ${seen.slice(-400)}`)));
  });
  const dispatcher = new ProxyAgent({
    uri: `http://127.0.0.1:${port}`,
    requestTls: { ca: readFileSync(FLOOR ? join(dir, "floor-ca", "ca.pem") : join(dir, "ca", "ca.pem"), "utf8"), ...(TUNNEL ? { maxCachedSessions: 0 } : {}) },
    connections: CONNECTIONS,
    // Under valgrind the proxy is some 50 times slower.
    headersTimeout: 120_000,
    bodyTimeout: 120_000,
  });
  const origin = `https://${BENCH_DOMAIN}:${upstream.ready.port}`;
  const download = async (mib: number) => {
    const { statusCode, body } = await dispatcher.request({ origin, path: `/download?bytes=${mib * 1024 * 1024}`, method: "GET" });
    let received = 0;
    for await (const chunk of body) received += (chunk as Buffer).length;
    if (statusCode !== 200 || received !== mib * 1024 * 1024) throw new Error(`download answered ${statusCode} with ${received} bytes`);
  };
  const run = (count: number) => (DOWNLOAD ? download(count) : smallGets(dispatcher, origin, CONNECTIONS, count, "portcullis", TUNNEL));
  const control = (...args: string[]) => execFileSync("callgrind_control", [...args, String(proxy.pid)], { stdio: "ignore" });
  const units = DOWNLOAD ? "MiB" : TUNNEL ? "tunnels" : "requests";
  log(`${what}: warming up, ${WARMUP_UNITS} ${units}`);
  await run(WARMUP_UNITS);
  control("-i", "on");
  log(`counting: ${UNITS} ${units}`);
  await run(UNITS);
  control("-i", "off");
  control("-d");
  await dispatcher.close();
  let total = 0;
  for (const file of readdirSync(work).filter((name) => name.startsWith("callgrind."))) {
    const totals = /^totals: (\d+)/m.exec(readFileSync(join(work, file), "utf8"));
    if (totals) total += Number(totals[1]);
    if (KEEP) {
      mkdirSync(KEEP, { recursive: true });
      copyFileSync(join(work, file), join(KEEP, file));
    }
  }
  if (total === 0) throw new Error("callgrind counted nothing (is callgrind_control on the PATH?)");
  process.stdout.write(`${what}${NODE_FLAGS.length ? ` (node ${NODE_FLAGS.join(" ")})` : ""}: ${(total / UNITS / 1000).toFixed(1)}k instructions a ${UNIT} (${UNITS} counted after ${WARMUP_UNITS} warm-up)\n`);
} finally {
  await new Promise<void>((done) => {
    if (proxy.exitCode !== null || proxy.signalCode !== null) return done();
    proxy.once("exit", () => done());
    proxy.kill("SIGTERM");
  });
  await upstream.close();
  killAllChildren();
  rmSync(work, { recursive: true, force: true });
}
