import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "./helpers/pki.js";

/**
 * `make run` in a copy of the Makefile with a stand-in project: its build script announces
 * itself on stdout (as tsc and npm do) and its dist/cli.js prints its arguments, so what
 * reaches make's stdout and when a build runs can be seen exactly.
 */
let project: string;
const make = (target: string) => spawnSync("make", ["-s", target], { cwd: project, encoding: "utf8", timeout: 60_000 });
const age = (file: string, secondsAgo: number) => {
  const when = new Date(Date.now() - secondsAgo * 1000);
  utimesSync(join(project, file), when, when);
};

beforeAll(() => {
  project = tempDir("makefile");
  copyFileSync(join(import.meta.dirname, "../Makefile"), join(project, "Makefile"));
  mkdirSync(join(project, "src"));
  mkdirSync(join(project, "certs"));
  mkdirSync(join(project, "node_modules"));
  writeFileSync(join(project, "src", "a.ts"), "export {};\n");
  writeFileSync(join(project, "tsconfig.json"), "{}\n");
  writeFileSync(join(project, "certs", "ca.pem"), "present\n");
  const cli = `process.stdout.write("cli " + process.argv.slice(2).join(" ") + "\\n");\n`;
  writeFileSync(join(project, "write-cli.cjs"), `require("fs").mkdirSync("dist", { recursive: true });\nrequire("fs").writeFileSync("dist/cli.js", ${JSON.stringify(cli)});\n`);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "stand-in", version: "1.0.0", scripts: { build: "echo BUILD-OUTPUT && node write-cli.cjs" } }));
  writeFileSync(join(project, "package-lock.json"), JSON.stringify({ name: "stand-in", lockfileVersion: 3, packages: {} }));
  writeFileSync(join(project, "node_modules", ".package-lock.json"), "{}");
  for (const file of ["src/a.ts", "tsconfig.json", "package.json", "package-lock.json"]) age(file, 100);
  age("node_modules/.package-lock.json", 50);
});

describe("make run", () => {
  it("builds only when stale and keeps everything but the proxy's own output off stdout", () => {
    const first = make("run");
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toBe("cli start --policy policies/default.yaml\n");
    expect(first.stderr).toContain("BUILD-OUTPUT");

    const second = make("run");
    expect(second.stdout).toBe("cli start --policy policies/default.yaml\n");
    expect(second.stderr).not.toContain("BUILD-OUTPUT");

    age("src/a.ts", -5); // a source edited after the build
    const third = make("run");
    expect(third.stdout).toBe("cli start --policy policies/default.yaml\n");
    expect(third.stderr).toContain("BUILD-OUTPUT");
  });

  it("installs with npm ci when a lock file is there", () => {
    const dry = spawnSync("make", ["-n", "install", "-W", "package-lock.json"], { cwd: project, encoding: "utf8" });
    expect(dry.stdout).toContain("npm ci");
    expect(readFileSync(join(import.meta.dirname, "../deploy/Dockerfile"), "utf8")).toMatch(/^RUN npm ci /m);
  });
});
