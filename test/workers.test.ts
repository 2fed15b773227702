import { execFile, execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { assertBuilt, startCli, type RunningProxy } from "./helpers/cli.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const exec = promisify(execFile);
let pki: ServerPki;
let upstream: TestUpstream;
let running: RunningProxy | undefined;

beforeAll(async () => {
  assertBuilt();
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => (req.resume(), res.end(`ok ${req.url}`)), pki);
});

afterAll(async () => {
  running?.child.kill("SIGKILL");
  await upstream?.close();
});

function childrenOf(pid: number): number[] {
  try {
    return execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" }).trim().split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("start --workers", () => {
  it("runs N workers on one port, sums their metrics, relays SIGHUP to all, and drains all on SIGTERM", { timeout: 60_000 }, async () => {
    const dir = tempDir("workers");
    const policyFile = join(dir, "policy.yaml");
    const policy = (extra: string) =>
      `version: 1\nca: { dir: ${JSON.stringify(join(dir, "certs"))} }\nupstream: { trust: [${JSON.stringify(pki.caFile)}] }\nadmin: { listen: "127.0.0.1:0" }\nnetwork:\n  default: allow\n  allow_ips: [127.0.0.1/32]\n${extra}`;
    writeFileSync(policyFile, policy(""));
    running = await startCli(["--policy", policyFile, "--listen", "127.0.0.1:0", "--workers", "2"]);
    const proxy = running;
    expect(proxy.stderr()).toContain("(2 workers)");
    const adminLine = await proxy.waitForOutput(/admin on 127\.0\.0\.1:\d+/);
    const admin = `http://127.0.0.1:${adminLine.split(":").at(-1)}`;
    const workers = childrenOf(proxy.child.pid!);
    expect(workers).toHaveLength(2);

    const curl = (path: string) =>
      exec("curl", ["-sS", "--cacert", join(dir, "certs", "ca.pem"), "-x", `http://127.0.0.1:${proxy.port}`, "-o", "/dev/null", "-w", "%{http_code}", `https://localhost:${upstream.port}${path}`]).then((r) => r.stdout);
    for (let i = 0; i < 6; i++) expect(await curl(`/n${i}`)).toBe("200");
    const metrics = await (await request(`${admin}/metrics`)).body.text();
    expect(metrics).toContain('portcullis_requests_total{decision="allow",status_class="2xx",host="localhost",kind="http",http_version="2"} 6');
    const ready = (await (await request(`${admin}/readyz`)).body.json()) as { ready: boolean; workers_listening: number };
    expect(ready).toMatchObject({ ready: true, workers_listening: 2 });
    // The admin listener is the primary's, the destination guard each worker's: the workers know its port.
    const viaProxy = await exec("curl", ["-sS", "-x", `http://127.0.0.1:${proxy.port}`, "-o", "/dev/null", "-w", "%{http_code}", `${admin}/healthz`]).then((r) => r.stdout);
    expect(viaProxy).toBe("403");

    writeFileSync(policyFile, policy(`  rules:\n    - { name: closed, action: deny, hosts: [localhost], ports: [${upstream.port}], paths: ["/after*"] }\n`));
    proxy.child.kill("SIGHUP");
    // Each worker reloads (on SIGHUP and on the file change): wait until both have.
    await proxy.waitForOutput(/policy reloaded[\s\S]*policy reloaded/);
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add(await curl(`/after${i}`).catch((e: { stdout?: string }) => e.stdout ?? "error"));
    expect([...seen]).toEqual(["403"]);

    proxy.child.kill("SIGTERM");
    expect(await proxy.exited).toBe(0);
    for (const pid of workers) expect(alive(pid)).toBe(false);
    running = undefined;
  });

  it("the primary takes a changed admin.token when the policy file is saved, as single-process start does", { timeout: 60_000 }, async () => {
    const dir = tempDir("workers-admin-token");
    const policyFile = join(dir, "policy.yaml");
    writeFileSync(join(dir, "a.txt"), "admin-token-a-7d1c9e");
    writeFileSync(join(dir, "b.txt"), "admin-token-b-4f2a8b");
    const policy = (file: string) =>
      `version: 1\nca: { dir: ${JSON.stringify(join(dir, "certs"))} }\nadmin: { listen: "127.0.0.1:0", state: ${JSON.stringify(join(dir, "clients.json"))}, token: { file: ${JSON.stringify(join(dir, file))} } }\nnetwork: { default: deny }\n`;
    writeFileSync(policyFile, policy("a.txt"));
    running = await startCli(["--policy", policyFile, "--listen", "127.0.0.1:0", "--workers", "2"]);
    const adminLine = await running.waitForOutput(/admin on 127\.0\.0\.1:\d+/);
    const budgets = async (token: string) => (await request(`http://127.0.0.1:${adminLine.split(":").at(-1)}/ui`, { headers: { authorization: `Bearer ${token}` } })).statusCode;
    expect(await budgets("admin-token-a-7d1c9e")).toBe(200);
    writeFileSync(policyFile, policy("b.txt"));
    await expect.poll(() => budgets("admin-token-b-4f2a8b"), { timeout: 10_000 }).toBe(200);
    expect(await budgets("admin-token-a-7d1c9e")).toBe(401);
    running.child.kill("SIGTERM");
    expect(await running.exited).toBe(0);
    running = undefined;
  });

  it("gives up with exit 1 when its workers cannot listen (port in use), instead of respawning for ever", { timeout: 30_000 }, async () => {
    const { createServer } = await import("node:net");
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as import("node:net").AddressInfo).port;
    const dir = tempDir("workers-fail");
    const policyFile = join(dir, "policy.yaml");
    writeFileSync(policyFile, `version: 1\nca: { dir: ${JSON.stringify(join(dir, "certs"))} }\n`);
    try {
      const result = await exec(process.execPath, [join(import.meta.dirname, "../dist/cli.js"), "start", "--policy", policyFile, "--listen", `127.0.0.1:${port}`, "--workers", "2"]).catch(
        (e: { code: number; stderr: string }) => e,
      );
      expect((result as { code: number }).code).toBe(1);
      expect((result as { stderr: string }).stderr).toContain("giving up");
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it("rejects a malformed --workers with a usage error", async () => {
    const result = await exec(process.execPath, [join(import.meta.dirname, "../dist/cli.js"), "start", "--workers", "lots"]).catch((e: { code: number; stderr: string }) => e);
    expect((result as { code: number }).code).toBe(2);
  });
});

describe("--workers auto", () => {
  it("honours a container CPU limit (cgroup v2 and v1)", async () => {
    const { cgroupCpuLimit } = await import("../src/proxy/workers.js");
    const files = (map: Record<string, string>) => (file: string) => {
      if (!(file in map)) throw new Error("ENOENT");
      return map[file]!;
    };
    expect(cgroupCpuLimit(files({ "/sys/fs/cgroup/cpu.max": "200000 100000\n" }))).toBe(2);
    expect(cgroupCpuLimit(files({ "/sys/fs/cgroup/cpu.max": "50000 100000\n" }))).toBe(1);
    expect(cgroupCpuLimit(files({ "/sys/fs/cgroup/cpu.max": "max 100000\n" }))).toBeUndefined();
    expect(cgroupCpuLimit(files({ "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "300000", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000" }))).toBe(3);
    expect(cgroupCpuLimit(files({ "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000" }))).toBeUndefined();
    expect(cgroupCpuLimit(files({}))).toBeUndefined();
  });
});
