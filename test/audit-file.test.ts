import { existsSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyAgent, request } from "undici";
import { createProxy, type Proxy } from "../src/index.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: Proxy;
let dispatcher: ProxyAgent;
let auditFile: string;

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => (req.resume(), res.end("ok")), pki);
  const dir = tempDir("audit-file");
  auditFile = join(dir, "logs", "audit.log");
  proxy = await createProxy({
    policy: {
      version: 1,
      ca: { dir: join(dir, "certs") },
      upstream: { trust: [pki.caFile] },
      log: { audit: auditFile, level: "warn" },
      network: { default: "allow", allow_ips: ["127.0.0.1/32"] },
    },
    listen: "127.0.0.1:0",
    adminListen: null,
  });
  const address = await proxy.listen();
  dispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${address.port}`, requestTls: { ca: proxy.caCertPem } });
});

afterAll(async () => {
  await dispatcher?.close();
  await proxy?.close();
  await upstream?.close();
});

const lines = (file: string) => readFileSync(file, "utf8").trim().split("\n").filter(Boolean).map((line) => JSON.parse(line) as { path: string });

describe("audit log file", () => {
  it("appends one line per request, and starts a new file after logrotate moves it and the proxy is told to reopen", async () => {
    await (await request(`https://localhost:${upstream.port}/before`, { dispatcher })).body.text();
    await expect.poll(() => (existsSync(auditFile) ? lines(auditFile).map((l) => l.path) : [])).toEqual(["/before"]);
    renameSync(auditFile, `${auditFile}.1`);
    proxy.reopenLogs();
    await (await request(`https://localhost:${upstream.port}/after`, { dispatcher })).body.text();
    await expect.poll(() => (existsSync(auditFile) ? lines(auditFile).map((l) => l.path) : [])).toEqual(["/after"]);
    expect(lines(`${auditFile}.1`).map((l) => l.path)).toEqual(["/before"]);
  });
});
