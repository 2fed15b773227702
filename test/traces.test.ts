import { execFile } from "node:child_process";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { request } from "undici";
import { assertBuilt, startCli } from "./helpers/cli.js";
import type { PublishedRecord } from "../src/log/audit-feed.js";
import { startTraceExport } from "../src/telemetry/trace-export.js";
import { tunnelRecord } from "../src/transport/audit.js";
import { closedPort, OtlpReceiver } from "./helpers/otlp-receiver.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { startWsUpstream, type TestWsUpstream } from "./helpers/upstream.js";

const exec = promisify(execFile);
const SECRET = "trace-secret-value-7f3a9c";
process.env.PORTCULLIS_TRACE_TEST_SECRET = SECRET;

let pki: ServerPki;
let upstream: TestWsUpstream;
let receiver: OtlpReceiver;
let proxy: TestProxy;
const extraProxies: TestProxy[] = [];
const upstreamSaw: { url: string; rawHeaders: string[] }[] = [];

const policy = (otlp: string, port: number) =>
  policyTrusting(
    pki.caFile,
    `telemetry: { otlp: ${JSON.stringify(otlp)}, service_name: portcullis-test }\n` +
      `secrets:\n  api: { env: PORTCULLIS_TRACE_TEST_SECRET }\n` +
      `credentials:\n  - { name: api, hosts: [localhost], header: { name: X-Api-Key, value: "\${secrets.api}" } }\n`,
    `network:\n  default: deny\n  allow_ips: [127.0.0.1/32]\n  rules:\n    - { name: local, action: allow, hosts: [localhost], ports: [${port}] }\n    - { name: dead, action: allow, hosts: [localhost], ports: [1] }\n`,
  );

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startWsUpstream(pki);
  upstream.server.removeAllListeners("request");
  upstream.server.on("request", (req, res) => {
    upstreamSaw.push({ url: req.url ?? "", rawHeaders: req.rawHeaders });
    req.resume();
    res.end(`ok ${req.url}`);
  });
  receiver = await new OtlpReceiver().start();
  proxy = await startProxy(policy(receiver.url, upstream.port));
});

afterAll(async () => {
  await proxy?.close();
  for (const extra of extraProxies) await extra.close().catch(() => undefined);
  await receiver?.close();
  await upstream?.close();
});

describe("OTLP traces", () => {
  it("exports one span per exchange, session and denial, with the audit line's fields (scrubbed) and the exchange's own timing", { timeout: 30_000 }, async () => {
    const base = `https://localhost:${upstream.port}`;
    const ok = await request(`${base}/ok/traced?leak=${SECRET}`, { dispatcher: proxy.dispatcher });
    expect(ok.statusCode).toBe(200);
    await ok.body.text();
    // Refused at CONNECT: undici reports the tunnel's 403 as an error.
    await expect(request(`https://denied.example/nope`, { dispatcher: proxy.dispatcher })).rejects.toThrow(/403/);
    const dead = await request(`https://localhost:1/gone`, { dispatcher: proxy.dispatcher });
    expect(dead.statusCode).toBe(502);
    await dead.body.text();
    const ws = new WebSocket(`wss://localhost:${upstream.port}/ws`, { agent: proxy.agent(), ca: proxy.caPem });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    ws.close(4001, "done");
    await proxy.audit.waitFor((l) => l.msg === "websocket");

    const allowed = await receiver.waitFor((s) => String(s.attributes.path).startsWith("/ok/traced"));
    const line = await proxy.audit.waitFor((l) => String(l.path).startsWith("/ok/traced"));
    expect(allowed.name).toBe("GET localhost");
    expect(allowed.kind).toBe(2); // SERVER
    expect(allowed.service).toBe("portcullis-test");
    expect(allowed.status.code).toBe(0);
    expect(allowed.attributes).toMatchObject({
      kind: "http",
      decision: "allow",
      status: 200,
      method: "GET",
      host: "localhost",
      port: upstream.port,
      rule: "local",
      req_id: line.req_id,
      credentials: ["api"],
      path: "/ok/traced?leak=[REDACTED]",
      resp_bytes: line.resp_bytes,
    });
    expect(allowed.attributes).not.toHaveProperty("req_headers");
    expect(allowed.attributes).not.toHaveProperty("client"); // null in the line (no clients configured): left out
    expect(allowed.endMs - allowed.startMs).toBeCloseTo(line.duration_ms as number, 0);
    expect(Math.abs(allowed.endMs - (line.time as number))).toBeLessThan(5);

    const refused = await receiver.waitFor((s) => s.attributes.host === "denied.example");
    expect(refused.attributes).toMatchObject({ kind: "denied", decision: "deny", status: 403, "error.type": "policy_denied" });
    expect(refused.status.code).toBe(0); // a denial is the policy working, not a fault

    const failed = await receiver.waitFor((s) => s.attributes.port === 1 && s.attributes.kind === "http");
    expect(failed.attributes).toMatchObject({ status: 502, "error.type": "upstream_unreachable" });
    expect(failed.status.code).toBe(2); // ERROR
    expect(failed.status.message).toBeTruthy();

    const session = await receiver.waitFor((s) => s.attributes.kind === "websocket");
    expect(session.name).toBe("websocket localhost");
    expect(session.attributes).toMatchObject({ "ws.close_code": 4001, "ws.closed_by": "client", status: 101 });

    expect(receiver.contentTypes.every((type) => type.startsWith("application/json"))).toBe(true);
    for (const body of receiver.bodies) expect(body).not.toContain(SECRET);
  });

  it("exports a span whose duration a rebuilt audit line redacted, with the rest of its batch", async () => {
    const own = await new OtlpReceiver().start();
    const traces = startTraceExport({ otlp: own.url, serviceName: "redacted-duration", scheduledDelayMs: 10 });
    try {
      const at = Date.now();
      for (const [i, duration] of [5, "[REDACTED]", 7].entries()) {
        const base = tunnelRecord({ host: `h${i}.example`, port: 443, client: null, clientAddr: "127.0.0.1:1" }, 0, { status: 200 });
        traces.record({ ...base, duration_ms: duration, level: 30, time: at } as unknown as PublishedRecord);
      }
      await traces.shutdown();
      expect(own.spans).toHaveLength(3);
    } finally {
      await own.close();
    }
  });

  it("adds nothing to upstream requests: no traceparent, tracestate or baggage", async () => {
    const res = await request(`https://localhost:${upstream.port}/ok/headers`, { dispatcher: proxy.dispatcher });
    await res.body.text();
    const seen = upstreamSaw.filter((r) => r.url.startsWith("/ok/"));
    expect(seen.length).toBeGreaterThan(0);
    for (const { rawHeaders } of seen) {
      const names = rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
      expect(names).not.toContain("traceparent");
      expect(names).not.toContain("tracestate");
      expect(names).not.toContain("baggage");
      expect(names).toContain("x-api-key"); // the credential did reach it: the header list is the real one
    }
  });

  it("keeps serving when the collector is down, and closes promptly", { timeout: 30_000 }, async () => {
    const down = await startProxy(policy(`http://127.0.0.1:${await closedPort()}`, upstream.port));
    extraProxies.push(down);
    const started = performance.now();
    const answers = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const res = await request(`https://localhost:${upstream.port}/ok/down-${i}`, { dispatcher: down.dispatcher });
        await res.body.text();
        return res.statusCode;
      }),
    );
    expect(answers.every((status) => status === 200)).toBe(true);
    expect(performance.now() - started).toBeLessThan(10_000);
    const warning = await down.diagnostics.waitFor((l) => l.msg.startsWith("trace export failed"), 15_000);
    expect(warning.level).toBe(40);
    const closing = performance.now();
    await down.close();
    extraProxies.pop();
    expect(performance.now() - closing).toBeLessThan(6_000);
  });

  it("does not wait on a collector that accepts and never answers", { timeout: 30_000 }, async () => {
    const sockets = new Set<Socket>();
    const silent = http.createServer(() => undefined); // reads the export, never answers
    silent.on("connection", (socket: Socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    let received = 0;
    silent.on("request", () => received++);
    try {
      const stuck = await startProxy(policy(`http://127.0.0.1:${(silent.address() as AddressInfo).port}`, upstream.port));
      extraProxies.push(stuck);
      for (let i = 0; i < 5; i++) {
        const res = await request(`https://localhost:${upstream.port}/ok/stuck-${i}`, { dispatcher: stuck.dispatcher });
        expect(res.statusCode).toBe(200);
        await res.body.text();
      }
      const closing = performance.now();
      await stuck.close();
      extraProxies.pop();
      // Bounded by the drain's flush timeout (3 s), not by the collector.
      expect(performance.now() - closing).toBeLessThan(6_000);
      expect(received).toBeGreaterThan(0);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it("with --workers, each worker exports its own spans and flushes them on SIGTERM", { timeout: 60_000 }, async () => {
    assertBuilt();
    const own = await new OtlpReceiver().start();
    const dir = tempDir("traces-workers");
    const policyFile = join(dir, "policy.yaml");
    writeFileSync(policyFile, `${policy(own.url, upstream.port)}ca: { dir: ${JSON.stringify(join(dir, "certs"))} }\n`);
    const running = await startCli(["--policy", policyFile, "--listen", "127.0.0.1:0", "--workers", "2"]);
    try {
      const paths = Array.from({ length: 8 }, (_, i) => `/ok/worker-${i}`);
      await Promise.all(
        paths.map((path) =>
          exec("curl", ["-sS", "--cacert", join(dir, "certs", "ca.pem"), "-x", `http://127.0.0.1:${running.port}`, "-o", "/dev/null", `https://localhost:${upstream.port}${path}`]),
        ),
      );
      running.child.kill("SIGTERM");
      expect(await running.exited).toBe(0);
      const exported = own.spans.map((s) => s.attributes.path);
      for (const path of paths) expect(exported).toContain(path);
      expect(own.bodies.join("")).not.toContain(SECRET);
    } finally {
      running.child.kill("SIGKILL");
      await own.close();
    }
  });
});
