import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { CLI, assertBuilt, runCli } from "./helpers/cli.js";
import { tempDir } from "./helpers/pki.js";

const COMMANDS = ["init-ca", "start", "check", "explain", "tail", "trust"];
let work: string;

beforeAll(() => {
  assertBuilt();
  work = tempDir("operators");
});

describe("--version and help", () => {
  // Nine CLI starts: slow on a loaded machine, so the time limit is generous.
  it("prints the version from package.json, usage for every command, exit 0", { timeout: 90_000 }, () => {
    const manifest = JSON.parse(readFileSync(join(import.meta.dirname, "../package.json"), "utf8")) as { version: string };
    const version = runCli(["--version"]);
    expect(version.status).toBe(0);
    expect(version.stdout).toBe(`portcullis ${manifest.version}\n`);
    const help = runCli(["help"]);
    expect(help.status).toBe(0);
    for (const command of COMMANDS) expect(help.stdout).toContain(`  ${command} `);
    const one = runCli(["help", "tail"]);
    expect(one.status).toBe(0);
    expect(one.stdout).toMatch(/^usage: portcullis tail /);
    // COMMAND --help for every command, in one shell so the test stays quick.
    const script = COMMANDS.map((command) => `"$NODE" "$CLI" ${command} --help || echo "FAILED ${command}"`).join("; ");
    const all = spawnSync("/bin/sh", ["-c", script], { encoding: "utf8", env: { ...process.env, NODE: process.execPath, CLI } });
    expect(all.stdout).not.toContain("FAILED");
    for (const command of COMMANDS) expect(all.stdout).toContain(`usage: portcullis ${command} `);
    expect(all.stdout).toContain("--admin HOST:PORT|off");
  });

  it("keeps exit 2 for an unknown command or option, with a hint", { timeout: 60_000 }, () => {
    const typo = runCli(["strat"]);
    expect(typo.status).toBe(2);
    expect(typo.stderr).toContain('unknown command "strat" (did you mean "start"?)');
    const option = runCli(["check", "--polcy", "x.yaml"]);
    expect(option.status).toBe(2);
    expect(option.stderr).toContain("usage: portcullis check");
    expect(runCli(["help", "nothing"]).status).toBe(2);
  });
});

describe("portcullis check", () => {
  it("reports syntax and schema errors in one run, at their true positions, with did-you-mean hints", () => {
    const file = join(work, "faulty.yaml");
    writeFileSync(
      file,
      ["version: 1", "proxy:", "  listen: 127.0.0.1:8080", "   http2: true", "upstream:", "  connect_timout: 5s", "network:", "  default: maybe", "  rules:", "    - name: r", "      action: allow", "      host: [api.github.com]", "log:", "  levle: info", ""].join("\n"),
    );
    const result = runCli(["check", "--policy", file]);
    expect(result.status).toBe(1);
    const lines = result.stderr.trim().split("\n");
    // The indentation fault is reported where the yaml library sees it (line 3), not at 1:1, and the schema faults come in the same run.
    expect(lines[0]).toMatch(new RegExp(`^${file}:3:\\d+: `));
    expect(lines).toContain(`${file}:6:3: upstream.connect_timout: unknown key "connect_timout" (did you mean "connect_timeout"?)`);
    expect(lines.some((line) => line.startsWith(`${file}:8:12: network.default:`))).toBe(true);
    expect(lines).toContain(`${file}:12:7: network.rules.0.host: unknown key "host" (did you mean "hosts"?)`);
    expect(lines).toContain(`${file}:14:3: log.levle: unknown key "levle" (did you mean "level"?)`);
    expect(lines.every((line) => !line.includes(":1:1:"))).toBe(true);
  });

  it("warns, with exit 0, about every secret that cannot be resolved now", () => {
    const file = join(work, "secrets.yaml");
    writeFileSync(join(work, "present.txt"), "value\n");
    writeFileSync(
      file,
      "version: 1\nsecrets:\n  fine: { file: present.txt }\n  gone: { file: missing.txt }\n  unset: { env: PCX_SURELY_UNSET_VARIABLE }\nclients:\n  - { name: a, token: { env: PCX_OTHER_UNSET } }\n",
    );
    const result = runCli(["check", "--policy", file], { cwd: "/" });
    expect(result.status).toBe(0);
    const warnings = result.stderr.trim().split("\n");
    expect(warnings).toHaveLength(3);
    expect(warnings[0]).toMatch(new RegExp(`^${file}:4:\\d+: warning: secret "gone" cannot be resolved now: cannot read ${join(work, "missing.txt")} \\(ENOENT\\)$`));
    expect(warnings[1]).toMatch(new RegExp(`^${file}:5:\\d+: warning: secret "unset" cannot be resolved now: environment variable PCX_SURELY_UNSET_VARIABLE is not set$`));
    expect(warnings[2]).toContain('token of client "a" cannot be resolved now');
    expect(result.stdout).toContain("valid (3 warnings)");
  });
});
