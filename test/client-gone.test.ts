import { readdirSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { openTlsTunnel } from "./helpers/tunnel.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: TestProxy;
let marks: string;

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => (req.resume(), res.end("ok")), pki);
  marks = tempDir("slow-secret");
  // A secret that takes a while to resolve every time (ttl 1ms), and says when it starts and ends.
  const command = `n=$(date +%s%N); touch ${marks}/started-$n; sleep 1; touch ${marks}/done-$n; echo slow-secret-value`;
  proxy = await startProxy(
    policyTrusting(
      pki.caFile,
      `secrets:\n  slow: { command: ${JSON.stringify(command)}, ttl: 1ms }\ncredentials:\n  - { name: slow, hosts: [localhost], header: { name: X-Key, value: "\${secrets.slow}" } }\n`,
    ),
  );
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

describe("a client that leaves while its request is being prepared", () => {
  it("gets nothing sent upstream on its behalf, and one audit line saying it left", async () => {
    const files = (prefix: string) => readdirSync(marks).filter((f) => f.startsWith(prefix)).length;
    const startedBefore = files("started-");
    const doneBefore = files("done-");
    const tls = await openTlsTunnel(proxy.port, `localhost:${upstream.port}`, { servername: "localhost", ca: proxy.caPem });
    tls.write(`GET /abandoned HTTP/1.1\r\nHost: localhost:${upstream.port}\r\nX-Request-Id: gone-1\r\n\r\n`);
    // The secret is being resolved: the client leaves now.
    await expect.poll(() => files("started-"), { timeout: 10_000, interval: 20 }).toBeGreaterThan(startedBefore);
    tls.destroy();
    const line = await proxy.audit.waitFor((l) => l.req_id === "gone-1");
    expect(line.error).toMatchObject({ type: "client_closed" });
    await expect.poll(() => files("done-"), { timeout: 10_000, interval: 20 }).toBeGreaterThan(doneBefore);
    // A later request goes through the same stages; by the time it is answered the first one had every chance to be sent.
    const later = await request(`https://localhost:${upstream.port}/later`, { dispatcher: proxy.dispatcher });
    expect(await later.body.text()).toBe("ok");
    expect(upstream.seen.map((seen) => seen.url)).toEqual(["/later"]);
    expect(proxy.audit.lines.filter((l) => l.req_id === "gone-1")).toHaveLength(1);
  });
});
