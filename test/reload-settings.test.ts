import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ProxyAgent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadPolicyFile } from "../src/policy/load.js";
import { createProxy, type Proxy } from "../src/proxy/create-proxy.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { AuditCapture } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: Proxy;
let dispatcher: ProxyAgent;
let dir: string;
const diagnostics = new AuditCapture();

const policy = (audit: string, extra = "", caDir = "certs") =>
  `version: 1\nca: { dir: ${caDir} }\nlog: { audit: ${audit} }\nupstream: { trust: [${JSON.stringify(pki.caFile)}] }\nnetwork: { default: allow, allow_ips: [127.0.0.1/32] }\n${extra}`;

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => (req.resume(), res.end("ok")), pki);
  dir = tempDir("reload-settings");
  writeFileSync(join(dir, "policy.yaml"), policy("first.log"));
  proxy = await createProxy({ policy: await loadPolicyFile(join(dir, "policy.yaml")), listen: "127.0.0.1:0", diagnosticsStream: diagnostics, adminListen: null });
  const address = await proxy.listen();
  dispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${address.port}`, requestTls: { ca: proxy.caCertPem } });
});

afterAll(async () => {
  await dispatcher?.close();
  await proxy?.close({ graceMs: 500 });
  await upstream?.close();
});

async function get(path: string): Promise<void> {
  const answer = await request(`https://localhost:${upstream.port}${path}`, { dispatcher });
  await answer.body.text();
  expect(answer.statusCode).toBe(200);
}

/** The audit line is written when the exchange finishes, which may be just after the client has the body. */
async function fileContains(file: string, text: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(existsSync(file) && readFileSync(file, "utf8").includes(text))) {
    if (Date.now() > deadline) throw new Error(`${file} never contained ${text}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("reloading settings", () => {
  it("applies a changed log.audit: the following lines go to the new file", async () => {
    await get("/before");
    await fileContains(join(dir, "first.log"), '"path":"/before"');
    writeFileSync(join(dir, "policy.yaml"), policy("second.log"));
    expect(await proxy.reloadFromFile(join(dir, "policy.yaml"), "test")).toBe(true);
    await diagnostics.waitFor((line) => line.msg === "audit log now written to the new log.audit" && line.to === join(dir, "second.log"));
    await get("/after");
    await fileContains(join(dir, "second.log"), '"path":"/after"');
    expect(readFileSync(join(dir, "first.log"), "utf8")).not.toContain('"path":"/after"');
  });

  it("a reload it rejects changes nothing: not even where the audit lines go", async () => {
    const running = readFileSync(join(dir, "policy.yaml"), "utf8");
    const target = running.includes("second.log") ? "second.log" : "first.log";
    writeFileSync(join(dir, "policy.yaml"), policy("moved.log").replace(JSON.stringify(pki.caFile), JSON.stringify(join(dir, "missing-ca.pem"))));
    expect(await proxy.reloadFromFile(join(dir, "policy.yaml"), "test")).toBe(false);
    await get("/after-rejected");
    await fileContains(join(dir, target), '"path":"/after-rejected"');
    expect(existsSync(join(dir, "moved.log"))).toBe(false);
    writeFileSync(join(dir, "policy.yaml"), running);
  });

  it("a rejected reload leaves the budget store as it was: its counters go on after the next good reload", async () => {
    const budget = "budgets:\n  rules:\n    - { name: b, hosts: [localhost], requests: 3, window: 1d }\n";
    const status = async (path: string) => {
      const answer = await request(`https://localhost:${upstream.port}${path}`, { dispatcher });
      await answer.body.text();
      return answer.statusCode;
    };
    const good = policy("first.log", budget);
    writeFileSync(join(dir, "policy.yaml"), good);
    expect(await proxy.reloadFromFile(join(dir, "policy.yaml"), "test")).toBe(true);
    expect(await status("/b1")).toBe(200);
    // Rejected (its trust file is gone), and with no budgets: the running store must not be closed for it.
    writeFileSync(join(dir, "policy.yaml"), policy("first.log").replace(JSON.stringify(pki.caFile), JSON.stringify(join(dir, "missing-ca.pem"))));
    expect(await proxy.reloadFromFile(join(dir, "policy.yaml"), "test")).toBe(false);
    writeFileSync(join(dir, "policy.yaml"), good);
    expect(await proxy.reloadFromFile(join(dir, "policy.yaml"), "test")).toBe(true);
    expect([await status("/b2"), await status("/b3"), await status("/b4")]).toEqual([200, 200, 429]);
  });

  it("says in one line which changed settings need a restart, and keeps serving", async () => {
    writeFileSync(join(dir, "policy.yaml"), policy("second.log", "proxy: { listen: 127.0.0.1:18999, http2: false, max_concurrent_streams: 7 }\nadmin: { listen: 127.0.0.1:18998 }\n", "rotated-certs"));
    expect(await proxy.reloadFromFile(join(dir, "policy.yaml"), "test")).toBe(true);
    const line = await diagnostics.waitFor((l) => typeof l.msg === "string" && l.msg.startsWith("needs a restart"));
    expect(line.msg).toBe("needs a restart: proxy.listen, admin.listen, proxy.http2, proxy.max_concurrent_streams, ca.dir changed; the running values are kept until then");
    expect(diagnostics.lines.filter((l) => String(l.msg).startsWith("needs a restart"))).toHaveLength(1);
    await get("/still");
    expect(existsSync(join(dir, "second.log"))).toBe(true);
    // Reloaded again, it still runs what it started with: it says so again.
    expect(await proxy.reloadFromFile(join(dir, "policy.yaml"), "test")).toBe(true);
    await expect.poll(() => diagnostics.lines.filter((l) => String(l.msg).startsWith("needs a restart")).length).toBe(2);
  });
});
