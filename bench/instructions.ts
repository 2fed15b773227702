// Instructions a keep-alive request costs portcullis (`dist/cli.js start`, cpu-split's policy),
// counted by valgrind's callgrind: unlike CPU time on a shared VM, a count does not move with
// what the rest of the machine does. It still moves with when the garbage collector and the
// compiler threads run (one build: 547k to 682k a request over runs of 3,000, bench/RESULTS.md):
// compare builds over several runs each. Only the measured requests are counted
// (instrumentation switched on and off around them with callgrind_control).
// Usage: node --import tsx bench/instructions.ts   (after `npm run build`; needs valgrind)
//        BENCH_CLI=scratch/dist-old/cli.js BENCH_WARMUP=3000 BENCH_REQUESTS=3000 …
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ProxyAgent } from "undici";
import { benchFile, BENCH_DOMAIN, killAllChildren, log, probePolicy, smallGets, startChild, trackChild, type ChildMessage } from "./lib.js";

const WARMUP = Math.max(100, Number(process.env.BENCH_WARMUP ?? 3000) || 3000);
const REQUESTS = Math.max(100, Number(process.env.BENCH_REQUESTS ?? 3000) || 3000);
const CLI = process.env.BENCH_CLI ? resolve(process.env.BENCH_CLI) : benchFile("../dist/cli.js");
const CONNECTIONS = 8;

const work = mkdtempSync(join(tmpdir(), "portcullis-instructions-"));
const upstream = await startChild<ChildMessage & { port: number; caFile: string }>("upstream", "upstream-child.ts", [join(work, "upstream-ca"), BENCH_DOMAIN]);
const dir = join(work, "portcullis");
mkdirSync(dir);
const policy = join(dir, "policy.yaml");
writeFileSync(policy, probePolicy(dir, upstream.ready.caFile, upstream.ready.port));
const proxy = spawn("valgrind", ["--tool=callgrind", "--instr-atstart=no", `--callgrind-out-file=${join(work, "callgrind.%p")}`, process.execPath, CLI, "start", "--policy", policy, "--listen", "127.0.0.1:0"], {
  stdio: ["ignore", "ignore", "pipe"],
});
trackChild(proxy);
try {
  const port = await new Promise<number>((resolvePort, reject) => {
    let seen = "";
    proxy.stderr!.setEncoding("utf8");
    proxy.stderr!.on("data", (text: string) => {
      seen += text;
      const match = /listening on [\d.]+:(\d+)/.exec(seen);
      if (match) resolvePort(Number(match[1]));
    });
    proxy.once("exit", (code) => reject(new Error(`portcullis under valgrind exited (${code}) before it was ready: ${seen.slice(-400)}`)));
  });
  const dispatcher = new ProxyAgent({
    uri: `http://127.0.0.1:${port}`,
    requestTls: { ca: readFileSync(join(dir, "ca", "ca.pem"), "utf8") },
    connections: CONNECTIONS,
    // Under valgrind the proxy is some 50 times slower.
    headersTimeout: 120_000,
    bodyTimeout: 120_000,
  });
  const origin = `https://${BENCH_DOMAIN}:${upstream.ready.port}`;
  const run = (count: number) => smallGets(dispatcher, origin, CONNECTIONS, count, "portcullis");
  const control = (...args: string[]) => execFileSync("callgrind_control", [...args, String(proxy.pid)], { stdio: "ignore" });
  log(`warming up: ${WARMUP} requests`);
  await run(WARMUP);
  control("-i", "on");
  log(`counting: ${REQUESTS} requests`);
  await run(REQUESTS);
  control("-i", "off");
  control("-d");
  await dispatcher.close();
  let total = 0;
  for (const file of readdirSync(work).filter((name) => name.startsWith("callgrind."))) {
    const totals = /^totals: (\d+)/m.exec(readFileSync(join(work, file), "utf8"));
    if (totals) total += Number(totals[1]);
  }
  if (total === 0) throw new Error("callgrind counted nothing (is callgrind_control on the PATH?)");
  process.stdout.write(`${CLI}: ${(total / REQUESTS / 1000).toFixed(1)}k instructions a keep-alive request (${REQUESTS} counted after ${WARMUP} warm-up)\n`);
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
