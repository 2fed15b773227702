import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";

export const CLI = resolve(import.meta.dirname, "../../dist/cli.js");

export function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "make test" (it builds first) or "npm run build"`);
}

export function runCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd: options.cwd, env: { ...process.env, ...options.env }, timeout: 30_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

export interface RunningProxy {
  child: ChildProcessWithoutNullStreams;
  port: number;
  stdout: () => string;
  stderr: () => string;
  /** Resolves when stdout or stderr has printed text matching the pattern. */
  waitForOutput(pattern: RegExp, stream?: "stdout" | "stderr"): Promise<string>;
  exited: Promise<number | null>;
}

/** Starts `portcullis start` as a child process and resolves once it printed where it listens. */
export async function startCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; nodeFlags?: string[] } = {}): Promise<RunningProxy> {
  const child = spawn(process.execPath, [...(options.nodeFlags ?? []), CLI, "start", ...args], { cwd: options.cwd, env: { ...process.env, ...options.env } });
  let stdout = "";
  let stderr = "";
  const waiters: { pattern: RegExp; stream: "stdout" | "stderr"; resolve: (text: string) => void }[] = [];
  const check = () => {
    for (const waiter of [...waiters]) {
      const match = waiter.pattern.exec(waiter.stream === "stdout" ? stdout : stderr);
      if (match) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(match[0]);
      }
    }
  };
  child.stdout.on("data", (chunk: Buffer) => ((stdout += chunk.toString()), check()));
  child.stderr.on("data", (chunk: Buffer) => ((stderr += chunk.toString()), check()));
  const exited = new Promise<number | null>((resolveExit) => child.once("exit", (code) => resolveExit(code)));
  const waitForOutput = (pattern: RegExp, stream: "stdout" | "stderr" = "stderr") =>
    Promise.race([
      new Promise<string>((resolveWait) => {
        waiters.push({ pattern, stream, resolve: resolveWait });
        check();
      }),
      exited.then((code) => {
        throw new Error(`portcullis exited (${code}) before printing ${pattern}:\n${stderr}`);
      }),
    ]);
  const line = await waitForOutput(/portcullis listening on 127\.0\.0\.1:(\d+)/);
  return { child, port: Number(/:(\d+)$/.exec(line)![1]), stdout: () => stdout, stderr: () => stderr, waitForOutput, exited };
}
