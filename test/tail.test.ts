import { spawn, spawnSync } from "node:child_process";
import { appendFileSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { assertBuilt, CLI } from "./helpers/cli.js";
import { tempDir } from "./helpers/pki.js";

const sample = readFileSync(join(import.meta.dirname, "fixtures/audit-sample.jsonl"), "utf8");

function tail(args: string[], input = sample): { status: number | null; lines: string[] } {
  const result = spawnSync(process.execPath, [CLI, "tail", ...args], { input, encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } });
  return { status: result.status, lines: result.stdout.split("\n").filter(Boolean) };
}

beforeAll(() => assertBuilt());

describe("portcullis tail", () => {
  it("reads on past a line of the wrong shape, and shows a non-JSON line's escapes instead of running them", () => {
    const odd = ["null", '{"client":5}', '{"method":{}}', '{"req_bytes":{}}', '[1,2]', "raw \u001b[31mred\u001b]0;title\u0007"].join("\n");
    const { status, lines } = tail([], `${odd}\n${sample}`);
    expect(status).toBe(0);
    expect(lines).toHaveLength(6 + 6);
    expect(lines.join("\n")).not.toMatch(/\u001b/);
    expect(lines[5]).toBe("raw \\x1b[31mred\\x1b]0;title\\x07");
  });

  it("prints one line per event with time, client, decision, status, method, URL, duration, bytes and the reason for denials", () => {
    const { status, lines } = tail([]);
    expect(status).toBe(0);
    expect(lines).toHaveLength(6);
    const time = (ms: number) => new Date(ms).toISOString().slice(11, 23);
    expect(lines[0]).toBe(`${time(1795382157535)}  agent-1     allow  201  POST     api.github.com/repos/a/b/issues  120ms  ↑300 B ↓5.0 KiB`);
    expect(lines[1]).toContain("DENY   403  GET      evil.example/exfil?k=x");
    expect(lines[1]).toContain("[openai] placeholder sent to a host not allowed to receive it");
    expect(lines[2]).toContain("upstream_unreachable: connecting to api.openai.com timed out after 10s");
    expect(lines[3]).toContain("ws execd.internal:44772/pty/1/ws");
    expect(lines[3]).toContain("↓1.5 MiB");
    expect(lines[3]).toContain("close 1000 by client");
    expect(lines[4]).toBe("not json: a line some other tool wrote");
    expect(lines[5]).toContain("CONNECT  pastebin.com  ");
  });

  it.each([
    [["--denied"], ["r2", "pastebin"]],
    [["--client", "agent-1"], ["repos/a/b", "v1/models", "pty/1"]],
    [["--host", "*.github.com"], ["repos/a/b"]],
    [["--host", "pastebin.com"], ["pastebin"]],
    [["--status", "5xx"], ["v1/models"]],
    [["--status", "403,201"], ["repos/a/b", "exfil", "pastebin"]],
  ])("filters with %j", (args, expected) => {
    const { lines } = tail(args as string[]);
    const events = lines.filter((line) => !line.startsWith("not json"));
    expect(events).toHaveLength(expected.length);
    expected.forEach((fragment, i) => expect(events[i]).toContain(fragment === "r2" ? "exfil" : fragment));
  });

  it("--json passes the matching lines through unchanged", () => {
    const { lines } = tail(["--json", "--denied"]);
    const original = sample.split("\n").filter((line) => line.includes('"decision":"deny"'));
    expect(lines).toEqual(original);
  });

  it("colours when asked", () => {
    const result = spawnSync(process.execPath, [CLI, "tail", "--color", "--denied"], { input: sample, encoding: "utf8" });
    expect(result.stdout).toContain("\x1b[31mDENY");
  });

  it("shows control characters from log fields as \\xNN, never as terminal escapes", () => {
    const evil = JSON.stringify({ time: 1, msg: "denied", decision: "deny", status: 400, method: "POST", host: "api.test", path: "/v1/messages", rule: "r", reason: 'tool call "\u001b[2K\r\u001b[32mallow" denied' });
    const { lines } = tail(["--color"], `${evil}\n`);
    expect(lines[0]).not.toContain("\x1b[2K");
    expect(lines[0]).toContain("\\x1b[2K\\x0d");
  });

  it("rejects a malformed --status with a usage error", () => {
    expect(tail(["--status", "teapot"]).status).toBe(2);
  });

  it("follows a file as it grows and after it is rotated", async () => {
    const dir = tempDir("tail");
    const file = join(dir, "audit.log");
    const lines = sample.split("\n").filter(Boolean);
    writeFileSync(file, `${lines[0]}\n`);
    const child = spawn(process.execPath, [CLI, "tail", file, "--no-color"]);
    let out = "";
    const waitFor = (fragment: string) =>
      new Promise<void>((resolve) => {
        const check = () => out.includes(fragment) && (child.stdout.off("data", onData), resolve());
        const onData = (chunk: Buffer) => ((out += chunk.toString()), check());
        child.stdout.on("data", onData);
        check();
      });
    try {
      await waitFor("repos/a/b/issues");
      appendFileSync(file, `${lines[1]}\n`);
      await waitFor("evil.example");
      renameSync(file, `${file}.1`);
      writeFileSync(file, `${lines[2]}\n`);
      await waitFor("v1/models");
    } finally {
      child.kill("SIGTERM");
    }
    expect(out.split("\n").filter(Boolean)).toHaveLength(3);
  });
});
