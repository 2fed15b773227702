import { execFile } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo, type Server } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertBuilt, runCli, startCli, type RunningProxy } from "./helpers/cli.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const exec = promisify(execFile);
let pki: ServerPki;
let upstream: TestUpstream;
let work: string;
const running: RunningProxy[] = [];

beforeAll(async () => {
  assertBuilt();
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => {
    req.resume();
    // The proxy scrubs a secret echoed back, so the upstream says whether it got the right one.
    res.end(req.headers["x-token"] === "from-the-policy-folder" ? "token from the policy folder" : "wrong token");
  }, pki);
  work = tempDir("operators");
});

afterAll(async () => {
  for (const proxy of running) proxy.child.kill("SIGKILL");
  await upstream?.close();
});

async function takenPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as AddressInfo).port, server };
}

/** Waits for a condition a child process brings about in a file (no event to wait on across processes). */
async function until(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("portcullis start", () => {
  it("resolves ca.dir, log.audit, secret files and upstream.trust against the policy's folder and logs the CA path", { timeout: 40_000 }, async () => {
    const dir = tempDir("policy-home");
    copyFileSync(pki.caFile, join(dir, "upstream-ca.pem"));
    writeFileSync(join(dir, "token.txt"), "from-the-policy-folder\n");
    writeFileSync(
      join(dir, "policy.yaml"),
      [
        "version: 1",
        "ca: { dir: certs }",
        "log: { audit: audit.log }",
        "upstream: { trust: [upstream-ca.pem] }",
        "secrets: { token: { file: token.txt } }",
        "network: { default: allow, allow_ips: [127.0.0.1/32] }",
        'credentials:\n  - { name: t, hosts: [localhost], header: { name: X-Token, value: "${secrets.token}" } }',
        "",
      ].join("\n"),
    );
    const elsewhere = tempDir("cwd");
    const proxy = await startCli(["--policy", join(dir, "policy.yaml"), "--listen", "127.0.0.1:0", "--admin", "off"], { cwd: elsewhere });
    running.push(proxy);
    expect(proxy.stderr()).toContain(`"ca":"${join(dir, "certs", "ca.pem")}"`);
    expect(existsSync(join(elsewhere, "certs"))).toBe(false);
    const { stdout } = await exec("curl", ["-sS", "--fail", "--cacert", join(dir, "certs", "ca.pem"), "-x", `http://127.0.0.1:${proxy.port}`, `https://localhost:${upstream.port}/x`]);
    expect(stdout).toBe("token from the policy folder");
    await until(() => existsSync(join(dir, "audit.log")) && readFileSync(join(dir, "audit.log"), "utf8").includes('"path":"/x"'), "the audit line in the policy folder");
    expect(existsSync(join(elsewhere, "audit.log"))).toBe(false);
    proxy.child.kill("SIGTERM");
    expect(await proxy.exited).toBe(0);
  });

  it("--admin HOST:PORT moves the admin listener, --admin off removes it", { timeout: 40_000 }, async () => {
    const policy = join(work, "admin.yaml");
    writeFileSync(policy, `version: 1\nca: { dir: ${JSON.stringify(join(work, "admin-ca"))} }\nadmin: { listen: 127.0.0.1:1 }\n`);
    const moved = await startCli(["--policy", policy, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    running.push(moved);
    const line = await moved.waitForOutput(/portcullis admin on 127\.0\.0\.1:(\d+)/);
    const health = await fetch(`http://127.0.0.1:${/:(\d+)$/.exec(line)![1]}/healthz`);
    expect(health.status).toBe(200);
    moved.child.kill("SIGTERM");
    await moved.exited;
    const off = await startCli(["--policy", policy, "--listen", "127.0.0.1:0", "--admin", "off"]);
    running.push(off);
    const served = await fetch(`http://127.0.0.1:${off.port}/`);
    expect(served.headers.get("x-portcullis-error")).toBe("bad_request");
    off.child.kill("SIGTERM");
    expect(await off.exited).toBe(0);
    expect(off.stderr()).not.toContain("portcullis admin on");
    expect(runCli(["start", "--policy", policy, "--admin", "nowhere"]).status).toBe(2);
  });

  it("names the listener and address when one is in use", { timeout: 40_000 }, async () => {
    const taken = await takenPort();
    try {
      const policy = join(work, "inuse.yaml");
      writeFileSync(policy, `version: 1\nca: { dir: ${JSON.stringify(join(work, "inuse-ca"))} }\n`);
      const admin = runCli(["start", "--policy", policy, "--listen", "127.0.0.1:0", "--admin", `127.0.0.1:${taken.port}`]);
      expect(admin.status).toBe(1);
      expect(admin.stderr).toContain(`admin listener cannot listen on 127.0.0.1:${taken.port}: the address is already in use`);
      expect(admin.stderr).toContain("--admin");
      const proxy = runCli(["start", "--policy", policy, "--listen", `127.0.0.1:${taken.port}`, "--admin", "off"]);
      expect(proxy.status).toBe(1);
      expect(proxy.stderr).toContain(`proxy listener cannot listen on 127.0.0.1:${taken.port}: the address is already in use`);
    } finally {
      taken.server.close();
    }
  });
});

