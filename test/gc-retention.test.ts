import { writeFileSync } from "node:fs";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyAgent } from "undici";
import { assertBuilt, startCli, type RunningProxy } from "./helpers/cli.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

// An exchange's objects must die young. When something old points at them (once: a per-object
// accessor in an object literal, whose hidden class V8 keeps in the old generation), every
// young-generation collection copies the whole exchange and then promotes it: about 7 KB a
// request, and a quarter of the proxy's CPU (bench/RESULTS.md). V8's own GC trace
// (--trace-gc-nvp) says how much each scavenge promoted.

const CONNECTIONS = 8;
let pki: ServerPki;
let upstream: TestUpstream;
let proxy: RunningProxy | undefined;
let dispatcher: ProxyAgent | undefined;

beforeAll(async () => {
  assertBuilt();
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => {
    req.resume();
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ ok: true, path: req.url, pad: "x".repeat(32) }));
  }, pki);
});

afterAll(async () => {
  await dispatcher?.close();
  proxy?.child.kill("SIGKILL");
  await proxy?.exited;
  await upstream?.close();
});

async function gets(count: number, port: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (next++ < count) {
        const { statusCode, body } = await dispatcher!.request({ origin: `https://localhost:${port}`, path: "/small", method: "GET" });
        await body.arrayBuffer();
        if (statusCode !== 200) throw new Error(`GET /small answered ${statusCode}`);
      }
    }),
  );
}

/** The scavenges in V8's --trace-gc-nvp output, and the bytes each promoted to the old generation. */
function scavenges(trace: string): number[] {
  return trace
    .split("\n")
    .filter((line) => /\bgc=s\b/.test(line))
    .map((line) => Number(/\bpromoted=(\d+)/.exec(line)?.[1] ?? NaN));
}

describe("garbage an exchange leaves", () => {
  it("dies in the young generation: keep-alive requests promote almost nothing to the old one", { timeout: 120_000 }, async () => {
    const dir = tempDir("gc-retention");
    const policyFile = join(dir, "policy.yaml");
    writeFileSync(
      policyFile,
      [
        "version: 1",
        `ca: { dir: ${JSON.stringify(join(dir, "ca"))} }`,
        `log: { audit: ${JSON.stringify(join(dir, "audit.log"))}, level: warn }`,
        `upstream: { trust: [${JSON.stringify(pki.caFile)}] }`,
        "network:",
        "  default: deny",
        "  allow_ips: [127.0.0.1/32]",
        `  rules: [{ name: local, action: allow, hosts: [localhost], ports: [${upstream.port}] }]`,
        "",
      ].join("\n"),
    );
    proxy = await startCli(["--policy", policyFile, "--listen", "127.0.0.1:0"], {
      // The young generation's size fixed, not left to the heap limit V8 picks from the machine's
      // memory: what a scavenge promotes from the requests in flight is about the same at any
      // size, so bytes a request would grow on a machine that chose a smaller one.
      nodeFlags: ["--trace-gc-nvp", "--min-semi-space-size=16", "--max-semi-space-size=16"],
    });
    dispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${proxy.port}`, requestTls: { ca: readFileSync(join(dir, "ca", "ca.pem"), "utf8") }, connections: CONNECTIONS });
    // Warm: connections open, code compiled, the young generation at its working size.
    await gets(2_000, upstream.port);
    const from = proxy.stdout().length;
    const measured = 4_000;
    await gets(measured, upstream.port);
    const promoted = scavenges(proxy.stdout().slice(from));
    // Enough young collections for the figure to mean something (each is some 10 MB of allocation).
    expect(promoted.length).toBeGreaterThanOrEqual(3);
    expect(promoted.every(Number.isFinite)).toBe(true);
    const perRequest = promoted.reduce((a, b) => a + b, 0) / measured;
    // About 160 bytes a request now; 7,300 while literal accessors kept exchanges alive.
    expect(perRequest).toBeLessThan(1_500);
  });
});
