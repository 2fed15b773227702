// The Node floor as a running child (bench/peers/node-floor.ts): Node's own http.Server and
// https.request, a forged certificate per name from its own CA, and nothing else. It is a
// reference, not a peer: what any Node.js MITM pays on this machine before it does anything of
// its own, set against portcullis by bench/run.ts (the "Node floor" table) and bench/cpu-split.ts.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { benchFile, trackChild, type PeerHandle } from "./lib.js";

/** Starts the floor with its CA in `dir` (made there when missing); resolves once it listens. */
export function startNodeFloor(dir: string, upstreamCaFile: string): Promise<PeerHandle> {
  const child = spawn(process.execPath, ["--import", "tsx", benchFile("peers/node-floor.ts"), dir, upstreamCaFile], { stdio: ["ignore", "pipe", "pipe"] });
  trackChild(child);
  let output = "";
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (text: string) => void (output.length < 20_000 && (output += text)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`node-floor: no "listening on" line within 30 s: ${output.slice(0, 500)}`)), 30_000);
    const onExit = (code: number | null, signal: string | null) => fail(new Error(`node-floor exited (${signal ?? code}) before listening: ${output.slice(0, 500)}`));
    function fail(error: Error) {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(error);
    }
    child.once("exit", onExit);
    let seen = "";
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (text: string) => {
      seen += text;
      const listening = /listening on 127\.0\.0\.1:(\d+)/.exec(seen);
      if (!listening) return;
      clearTimeout(timer);
      child.off("exit", onExit);
      resolve({
        port: Number(listening[1]),
        pid: child.pid!,
        caPem: readFileSync(join(dir, "ca.pem"), "utf8"),
        version: `Node ${process.version}`,
        // It counts nothing itself: the scenarios' own checks see what failed. It prints nothing
        // either, so anything on its stderr (a crash, a warning) is for the caller to show.
        errors: () => ({ count: undefined, first: [] }),
        output: () => output.trim(),
        async close() {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), 8_000);
          await exited;
          clearTimeout(timer);
        },
      });
    });
  });
}
