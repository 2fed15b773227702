import { execFile, spawn } from "node:child_process";
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { CLI, assertBuilt } from "./helpers/cli.js";
import { tempDir } from "./helpers/pki.js";

const exec = promisify(execFile);
let work: string;

beforeAll(() => {
  assertBuilt();
  work = tempDir("tail-follow");
});

/** Waits for a condition a child process brings about (its output so far). */
async function until(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("portcullis tail", () => {
  const event = (i: number, extra: Record<string, unknown> = {}) =>
    JSON.stringify({ time: 1795382157535, msg: "http", decision: "allow", status: 200, method: "GET", scheme: "https", host: "api.test", port: 443, path: `/item/${i}`, ...extra });

  it("shows an answer portcullis made itself, or any 4xx/5xx, as an error and never as allow", () => {
    const lines = [event(1, { status: 400, method: null, path: null, error: { type: "bad_request", message: "malformed HTTP request (HPE_INVALID_HEADER_TOKEN)" } }), event(2, { status: 503 }), event(3)];
    const result = spawnTail(["--once", "--no-color", "-n", "all"], lines.join("\n"));
    return result.then((out) => {
      const shown = out.trim().split("\n");
      expect(shown[0]).toMatch(/ ERROR +400 /);
      expect(shown[0]).toContain("bad_request: malformed HTTP request");
      expect(shown[1]).toMatch(/ ERROR +503 /);
      expect(shown[2]).toMatch(/ allow +200 /);
    });
  });

  it("-n N prints the last N events; following starts with the last 10, then what is appended", { timeout: 40_000 }, async () => {
    const file = join(work, "tail-n.log");
    writeFileSync(file, `${Array.from({ length: 12 }, (_, i) => event(i)).join("\n")}\n`);
    const two = (await exec(process.execPath, [CLI, "tail", file, "--once", "-n", "2", "--no-color"])).stdout.trim().split("\n");
    expect(two.map((line) => /\/item\/(\d+)/.exec(line)![1])).toEqual(["10", "11"]);
    // --once alone is a report of the whole file.
    expect((await exec(process.execPath, [CLI, "tail", file, "--once", "--no-color"])).stdout.trim().split("\n")).toHaveLength(12);
    const child = spawn(process.execPath, [CLI, "tail", file, "--no-color"]);
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    try {
      await until(() => out.includes("/item/11"), "the backlog");
      appendFileSync(file, `${event(99)}\n`);
      await until(() => out.includes("/item/99"), "the appended line");
    } finally {
      child.kill("SIGTERM");
    }
    const items = out.trim().split("\n").map((line) => /\/item\/(\d+)/.exec(line)![1]);
    expect(items).toEqual(["2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "99"]);
  });

  it("waits for a missing file to appear instead of exiting", async () => {
    const file = join(tempDir("tail-wait"), "later.log");
    const child = spawn(process.execPath, [CLI, "tail", file, "--no-color"]);
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()));
    try {
      await until(() => err.includes(`waiting for ${file} to appear`), "the waiting notice");
      writeFileSync(file, `${event(7)}\n`);
      await until(() => out.includes("/item/7"), "the first line of the new file");
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill("SIGTERM");
    }
  });
});

function spawnTail(args: string[], input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, "tail", ...args, "-"]);
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.once("error", reject);
    child.once("close", () => resolve(out));
    child.stdin.end(`${input}\n`);
  });
}
