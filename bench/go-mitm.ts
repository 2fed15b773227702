// The Go peer: bench/peers/go-mitm/main.go, a TLS-intercepting proxy on net/http's
// httputil.ReverseProxy (standard library only), built into the work dir at the start of a run
// with the machine's Go (Debian golang-go; module mode and the module proxy off: it needs
// nothing but the standard library). Its CA comes from `portcullis init-ca` (ca.pem,
// ca-key.pem) and every forged certificate carries one ECDSA P-256 key, like portcullis' shared
// leaf key. *.bench.test (and bench.test) is dialled at 127.0.0.1; any other name is refused.
// It runs with GOMAXPROCS=1 (BENCH_GO_MAXPROCS to change it): one core's worth of Go code, like
// the other columns (one portcullis process, squid's `workers 1`, one mitmproxy/http-mitm-proxy
// process). On the 2-core VM shared with client and upstream that is also its faster setting
// for HTTP/1.1 (keep-alive: 1,216–1,470 req/s and 340–377 µs CPU per request, against 945–1,012
// and 490–519 µs with GOMAXPROCS=2, same day).
import { execFile, spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { benchFile, BENCH_DOMAIN, log, trackChild } from "./lib.js";
import type { PeerHandle } from "./lib.js";

/** The Go peer as a running child: its errors are the upstream failures it answered with 502, printed on SIGTERM. */
export type GoMitmHandle = PeerHandle;

function run(command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(command, args, { encoding: "utf8", env, timeout: timeoutMs }, (error, stdout, stderr) =>
      error ? reject(new Error(`${command} ${args.join(" ")}: ${error.message.split("\n")[0]} ${stderr.slice(0, 800)}`)) : resolve(stdout.trim()),
    ),
  );
}

/** `go version`, or undefined when there is no go on the PATH. */
export function goVersion(): Promise<string | undefined> {
  return run("go", ["version"], process.env, 20_000).then(
    (text) => text.replace(/^go version /, ""),
    () => undefined,
  );
}

/** Builds main.go into `dir` (which exists); resolves with the binary's path. */
export async function buildGoMitm(dir: string): Promise<string> {
  const out = join(dir, "go-mitm");
  const env: NodeJS.ProcessEnv = { ...process.env, GO111MODULE: "off", GOFLAGS: "", GOPROXY: "off" };
  // A build cache is required; without a home directory, one in the work dir.
  if (!process.env.GOCACHE && !process.env.HOME) env.GOCACHE = join(dir, "go-cache");
  const started = performance.now();
  await run("go", ["build", "-o", out, benchFile("peers/go-mitm/main.go")], env, 300_000);
  log(`go-mitm built in ${Math.round(performance.now() - started)} ms`);
  return out;
}

/** Starts the built peer with the CA in caDir (ca.pem, ca-key.pem; leaf-key.pem is written here). */
/** The GOMAXPROCS the peer runs with. */
export const GO_MAXPROCS = process.env.BENCH_GO_MAXPROCS || "1";

export async function startGoMitm(binary: string, caDir: string, upstreamCaFile: string, version: string): Promise<GoMitmHandle> {
  const leafKey = join(caDir, "leaf-key.pem");
  if (!existsSync(leafKey)) {
    // The same kind of shared leaf key as portcullis makes for a new CA dir (src/ca/keys.ts).
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    writeFileSync(leafKey, privateKey.export({ type: "pkcs8", format: "pem" }) as string, { mode: 0o600 });
  }
  const args = [
    "-listen", "127.0.0.1:0",
    "-ca-cert", join(caDir, "ca.pem"),
    "-ca-key", join(caDir, "ca-key.pem"),
    "-leaf-key", leafKey,
    "-upstream-ca", upstreamCaFile,
    "-resolve", `.${BENCH_DOMAIN}=127.0.0.1`,
    ...(process.env.BENCH_GO_VERBOSE === "1" ? ["-verbose"] : []),
  ];
  const started = performance.now();
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, GOMAXPROCS: GO_MAXPROCS } });
  trackChild(child);
  let other = "";
  let pending = "";
  const first: string[] = [];
  let count: number | undefined;
  child.stdout!.setEncoding("utf8");
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (text: string) => void (other.length < 20_000 && (other += text)));
  const exited = new Promise<string>((resolve) => child.once("exit", (code, signal) => resolve(signal ?? String(code))));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`go-mitm: no "listening on" line within 15 s: ${other.slice(0, 500)}`)), 15_000);
    const onExit = (code: number | null, signal: string | null) => done(new Error(`go-mitm exited (${signal ?? code}) before listening: ${other.slice(0, 500)}`));
    function done(error?: Error, port?: number) {
      clearTimeout(timer);
      child.off("exit", onExit);
      if (error) {
        child.kill("SIGKILL");
        reject(error);
      } else resolve(port!);
    }
    child.once("exit", onExit);
    child.stdout!.on("data", (text: string) => {
      pending += text;
      for (let newline = pending.indexOf("\n"); newline !== -1; newline = pending.indexOf("\n")) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        const listening = /^listening on 127\.0\.0\.1:(\d+)$/.exec(line);
        if (listening) done(undefined, Number(listening[1]));
        else if (line.startsWith("errors ")) count = Number(line.slice("errors ".length));
        else if (line.startsWith("error ")) first.push(line.slice("error ".length, 300));
        else if (other.length < 20_000) other += `${line}\n`;
      }
    });
  });
  log(`go-mitm (${version}) listening on 127.0.0.1:${port} after ${Math.round(performance.now() - started)} ms`);
  return {
    port,
    pid: child.pid!,
    caPem: readFileSync(join(caDir, "ca.pem"), "utf8"),
    version,
    errors: () => ({ count, first }),
    output: () => other.trim(),
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM"); // prints its error count, exits 0
      const timer = setTimeout(() => child.kill("SIGKILL"), 8_000);
      const how = await exited;
      clearTimeout(timer);
      if (how !== "0") other += `exited with ${how} after SIGTERM\n`;
    },
  };
}
