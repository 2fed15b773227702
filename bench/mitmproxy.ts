// mitmproxy (mitmdump, the Debian package) as the HTTP/2 comparison peer, in a process of its
// own: 127.0.0.1 on a port picked here, its own confdir (CA) in the work dir, streaming on
// (stream_large_bodies=1), HTTP/2 on (its default), the upstream CA trusted through
// ssl_verify_upstream_trusted_ca, and *.bench.test sent to 127.0.0.1 by bench/mitmproxy-addon.py
// (which refuses every other address). Started only when `mitmdump` is on the PATH.
import { execFile, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { benchFile, freePort, log, trackChild } from "./lib.js";
import type { PeerHandle } from "./lib.js";

/** mitmproxy as a running child: its errors are the flows mitmproxy reported as failed (the addon's count). */
export type MitmproxyHandle = PeerHandle;

/** `mitmdump --version`'s version number, or undefined when there is no mitmdump. */
export function mitmdumpVersion(): Promise<string | undefined> {
  return new Promise((resolve) =>
    execFile("mitmdump", ["--version"], { encoding: "utf8", timeout: 20_000 }, (error, stdout) =>
      resolve(error ? undefined : stdout.split("\n")[0]?.replace(/^Mitmproxy:\s*/i, "").trim()),
    ),
  );
}

export async function startMitmproxy(confdir: string, upstreamCaFile: string, version: string): Promise<MitmproxyHandle> {
  const port = await freePort();
  const args = [
    "--listen-host", "127.0.0.1",
    "--listen-port", String(port),
    "--quiet",
    "--set", `confdir=${confdir}`,
    "--set", "stream_large_bodies=1",
    "--set", `ssl_verify_upstream_trusted_ca=${upstreamCaFile}`,
    "--set", "http2=true",
    "--set", "flow_detail=0",
    "--set", "termlog_verbosity=warn",
    "-s", benchFile("mitmproxy-addon.py"),
  ];
  const started = performance.now();
  const child = spawn("mitmdump", args, { stdio: ["ignore", "pipe", "pipe"] });
  trackChild(child);
  let stdout = "";
  let other = "";
  const first: string[] = [];
  let count: number | undefined;
  child.stdout!.setEncoding("utf8");
  child.stderr!.setEncoding("utf8");
  let pending = "";
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`mitmdump: not ready within 30 s; output: ${(stdout + other).slice(0, 500)}`)), 30_000);
    const onExit = (code: number | null, signal: string | null) => done(new Error(`mitmdump exited (${signal ?? code}) before it was ready: ${(stdout + other).slice(0, 500)}`));
    function done(error?: Error) {
      clearTimeout(timer);
      child.off("exit", onExit);
      if (error) {
        child.kill("SIGKILL");
        reject(error);
      } else resolve();
    }
    child.once("exit", onExit);
    child.stdout!.on("data", (text: string) => {
      pending += text;
      let newline = pending.indexOf("\n");
      while (newline !== -1) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        newline = pending.indexOf("\n");
        if (line === "BENCH-READY") done();
        else if (line.startsWith("BENCH-ERRORS ")) count = Number(line.slice("BENCH-ERRORS ".length));
        else if (line.startsWith("BENCH-ERROR ")) first.push(line.slice("BENCH-ERROR ".length, 300));
        else if (stdout.length < 20_000) stdout += `${line}\n`;
      }
    });
    child.stderr!.on("data", (text: string) => void (other.length < 20_000 && (other += text)));
  });
  const exited = new Promise<string>((resolve) => child.once("exit", (code, signal) => resolve(signal ?? String(code))));
  await ready;
  const caFile = join(confdir, "mitmproxy-ca-cert.pem");
  if (!existsSync(caFile)) throw new Error(`mitmdump is listening but wrote no ${caFile}`);
  log(`mitmproxy (${version}) listening on 127.0.0.1:${port} after ${Math.round(performance.now() - started)} ms`);
  return {
    port,
    pid: child.pid!,
    caPem: readFileSync(caFile, "utf8"),
    version,
    errors: () => ({ count, first }),
    output: () => `${stdout}${other}`.trim(),
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM"); // mitmdump shuts down on SIGTERM (the addon's done() prints its count)
      const timer = setTimeout(() => child.kill("SIGKILL"), 8_000);
      const how = await exited;
      clearTimeout(timer);
      if (how !== "0") log(`mitmdump exited with ${how} after SIGTERM`);
    },
  };
}
