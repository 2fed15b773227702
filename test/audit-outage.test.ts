// An audit log that cannot be written (a full disk: /dev/full answers every write with ENOSPC)
// is an outage the proxy survives and reports, failing closed: nothing it cannot record is run.
import type { EventEmitter } from "node:events";
import fs, { existsSync, mkdirSync, readFileSync, renameSync, rmdirSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyAgent, request } from "undici";
import { AUDIT_HOLD_BYTES, AUDIT_RETRY_MS, openAuditDestination } from "../src/log/audit-destination.js";
import { AuditLog, type AuditHealthListener } from "../src/log/loggers.js";
import { Scrubber } from "../src/log/scrub.js";
import { tunnelRecord } from "../src/transport/audit.js";
import { assertBuilt, startCli, type RunningProxy } from "./helpers/cli.js";
import { h2Request, h2ThroughProxy } from "./helpers/h2.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const FULL_DISK = "/dev/full";
const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

let pki: ServerPki;
let upstream: TestUpstream;
const running: RunningProxy[] = [];
const dispatchers: ProxyAgent[] = [];

beforeAll(async () => {
  assertBuilt();
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => (req.resume(), res.end("ok")), pki);
});

afterAll(async () => {
  await Promise.all(dispatchers.map((dispatcher) => dispatcher.close()));
  for (const proxy of running) if (proxy.child.exitCode === null) proxy.child.kill("SIGKILL");
  await Promise.all(running.map((proxy) => proxy.exited));
  await upstream?.close();
});

interface Started {
  proxy: RunningProxy;
  auditFile: string;
  admin: string;
  dispatcher: ProxyAgent;
  ca: string;
}

/** `portcullis start` writing its audit log to `audit` ("audit.log" in its folder, or "-" for stdout), admin listener on. */
async function startWithAudit(name: string, audit: string, extraArgs: string[] = []): Promise<Started> {
  const dir = tempDir(name);
  const auditFile = join(dir, "audit.log");
  if (audit !== "-") symlinkSync(FULL_DISK, auditFile);
  const policy = join(dir, "policy.yaml");
  writeFileSync(
    policy,
    [
      "version: 1",
      "ca: { dir: certs }",
      `log: { audit: ${JSON.stringify(audit)}, level: warn }`,
      `upstream: { trust: [${JSON.stringify(pki.caFile)}] }`,
      "network: { default: allow, allow_ips: [127.0.0.1/32] }",
      "",
    ].join("\n"),
  );
  const proxy = await startCli(["--policy", policy, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", ...extraArgs]);
  running.push(proxy);
  const adminLine = await proxy.waitForOutput(/portcullis admin on 127\.0\.0\.1:(\d+)/);
  const ca = readFileSync(join(dir, "certs", "ca.pem"), "utf8");
  const dispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${proxy.port}`, requestTls: { ca } });
  dispatchers.push(dispatcher);
  return { proxy, auditFile, admin: `http://127.0.0.1:${/:(\d+)$/.exec(adminLine)![1]}`, dispatcher, ca };
}

/** log.audit is a symlink to /dev/full: every write of it fails with ENOSPC. */
const startOnFullDisk = (name: string, extraArgs: string[] = []) => startWithAudit(name, "audit.log", extraArgs);

/** A raw CONNECT through the proxy: its status line and headers. */
function connect(proxyPort: number, authority: string): Promise<{ status: number; statusMessage: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: proxyPort, method: "CONNECT", path: authority, agent: false });
    req.once("connect", (response, socket) => {
      socket.destroy();
      resolve({ status: response.statusCode!, statusMessage: response.statusMessage!, headers: response.headers });
    });
    req.once("error", reject);
    req.end();
  });
}

const lines = (file: string) =>
  readFileSync(file, "utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line) as { msg: string; path?: string; status: number; error?: { type: string } });

describe.skipIf(!existsSync(FULL_DISK))("an audit log that cannot be written (portcullis start)", () => {
  it("refuses requests (HTTP/1.1, h2, plain HTTP) and new tunnels with 503 audit_unavailable, says so on /readyz and /metrics, and serves again, with every held line written, once the log can be written", { timeout: 60_000 }, async () => {
    const { proxy, auditFile, admin, dispatcher, ca } = await startOnFullDisk("audit-outage");
    const origin = `https://localhost:${upstream.port}`;
    // An h2 connection opened while the log can still be written: its later streams are refused too.
    const h2 = await h2ThroughProxy(proxy.port, "localhost", upstream.port, ca);
    const first = await request(`${origin}/first`, { dispatcher });
    expect(first.statusCode).toBe(200);
    await first.body.text();
    // The line is held, and the batch's write (at most AUDIT_FLUSH_MS later) meets the full disk.
    await proxy.waitForOutput(new RegExp(`the audit log ${escapeRegExp(auditFile)} cannot be written: ENOSPC`));

    const refused = await request(`${origin}/second`, { dispatcher });
    expect(refused.statusCode).toBe(503);
    expect(refused.headers["x-portcullis-error"]).toBe("audit_unavailable");
    const body = (await refused.body.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe("audit_unavailable");
    expect(body.error.message).toContain("ENOSPC");
    // Sandboxes learn why, not where the operator keeps the log.
    expect(body.error.message).not.toContain(auditFile);

    const stream = await h2Request(h2.session, { ":path": "/h2-refused", ":authority": `localhost:${upstream.port}` });
    expect(stream.status).toBe(503);
    expect(stream.headers["x-portcullis-error"]).toBe("audit_unavailable");
    h2.session.close();
    // Plain HTTP in absolute form on the listener, no CONNECT.
    const plainAgent = new ProxyAgent({ uri: `http://127.0.0.1:${proxy.port}`, proxyTunnel: false });
    dispatchers.push(plainAgent);
    const plain = await request(`http://localhost:${upstream.port}/plain-refused`, { dispatcher: plainAgent });
    expect(plain.statusCode).toBe(503);
    expect(plain.headers["x-portcullis-error"]).toBe("audit_unavailable");
    await plain.body.text();

    const tunnel = await connect(proxy.port, `localhost:${upstream.port}`);
    expect(tunnel.status).toBe(503);
    expect(tunnel.statusMessage).toMatch(/^Service Unavailable by portcullis: the audit log cannot be written \(ENOSPC\)/);
    expect(tunnel.headers["x-portcullis-error"]).toBe("audit_unavailable");

    const readiness = await fetch(`${admin}/readyz`);
    expect(readiness.status).toBe(503);
    expect(((await readiness.json()) as { audit: string }).audit).toContain("ENOSPC");
    expect(await (await fetch(`${admin}/metrics`)).text()).toMatch(/^portcullis_audit_log_writable 0$/m);
    expect((await fetch(`${admin}/healthz`)).status).toBe(200);

    // The operator makes room: here, log.audit becomes a real file again, and logrotate's signal reopens it.
    unlinkSync(auditFile);
    proxy.child.kill("SIGUSR2");
    await expect.poll(async () => (await fetch(`${admin}/readyz`)).status, { timeout: 10_000, interval: 100 }).toBe(200);
    await proxy.waitForOutput(/the audit log \S+ is written again; no line was lost/);
    expect(await (await fetch(`${admin}/metrics`)).text()).toMatch(/^portcullis_audit_log_writable 1$/m);

    const after = await request(`${origin}/third`, { dispatcher });
    expect(after.statusCode).toBe(200);
    await after.body.text();
    proxy.child.kill("SIGTERM");
    expect(await proxy.exited).toBe(0);

    const written = lines(auditFile);
    expect(written.map((line) => line.path ?? line.msg)).toEqual(["/first", "/second", "/h2-refused", "/plain-refused", "tunnel", "/third"]);
    expect(written.map((line) => line.status)).toEqual([200, 503, 503, 503, 503, 200]);
    for (const refused of written.slice(1, 5)) expect(refused.error?.type).toBe("audit_unavailable");
  });

  it.each([[[]], [["--workers", "2"]]])("with log.audit on a stdout whose reader is gone (EPIPE), refuses for good and fails /healthz, so an orchestrator restarts it (%j)", { timeout: 60_000 }, async (extraArgs: string[]) => {
    const { proxy, admin, dispatcher } = await startWithAudit("audit-outage-epipe", "-", extraArgs);
    expect((await fetch(`${admin}/healthz`)).status).toBe(200);
    const workers = extraArgs.length > 0;
    proxy.child.stdout.destroy(); // the log's reader goes away
    await (await request(`https://localhost:${upstream.port}/before`, { dispatcher })).body.text();
    await proxy.waitForOutput(/the audit log \(stdout\) cannot be written: EPIPE.*only a restart/);
    // Under --workers the worker's report reaches the primary over IPC, a moment after its diagnostic.
    await expect.poll(async () => (await fetch(`${admin}/healthz`)).status, { timeout: 10_000, interval: 50 }).toBe(503);
    const reason = ((await (await fetch(`${admin}/healthz`)).json()) as { status: string; reason: string });
    expect(reason.status).toBe("broken");
    expect(reason.reason).toMatch(workers ? /^worker \d+: the audit log cannot be written \(EPIPE\)$/ : /^the audit log cannot be written \(EPIPE\)$/);
    expect((await fetch(`${admin}/readyz`)).status).toBe(503);
    if (!workers) {
      // (Under --workers the next connection may go to a worker that has written nothing yet.)
      const refused = await request(`https://localhost:${upstream.port}/after`, { dispatcher });
      expect(refused.statusCode).toBe(503);
      expect(refused.headers["x-portcullis-error"]).toBe("audit_unavailable");
      await refused.body.text();
      // Lines written to a destination with no reader are counted as dropped.
      expect(await (await fetch(`${admin}/metrics`)).text()).toMatch(/^portcullis_audit_lines_dropped_total [1-9]\d*$/m);
    }
    proxy.child.kill("SIGTERM");
    expect(await proxy.exited).toBe(0);
  });

  it("exits on SIGTERM while the log cannot be written, instead of retrying the write forever", { timeout: 60_000 }, async () => {
    const { proxy, dispatcher } = await startOnFullDisk("audit-outage-exit");
    const response = await request(`https://localhost:${upstream.port}/held`, { dispatcher });
    await response.body.text();
    await proxy.waitForOutput(/cannot be written: ENOSPC/);
    proxy.child.kill("SIGTERM");
    expect(await proxy.exited).toBe(0);
  });

  it("with --workers, the primary's /readyz is not ready while a worker's log cannot be written, and is again once it can", { timeout: 60_000 }, async () => {
    const { proxy, auditFile, admin, ca } = await startOnFullDisk("audit-outage-workers", ["--workers", "2"]);
    expect((await fetch(`${admin}/readyz`)).status).toBe(200);
    // Two connections, so that at least one worker has a line held (whichever the cluster picks).
    for (const path of ["/w1", "/w2"]) {
      const dispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${proxy.port}`, requestTls: { ca } });
      dispatchers.push(dispatcher);
      await (await request(`https://localhost:${upstream.port}${path}`, { dispatcher })).body.text();
    }
    await proxy.waitForOutput(/cannot be written: ENOSPC/);
    await expect.poll(async () => (await fetch(`${admin}/readyz`)).status, { timeout: 10_000, interval: 50 }).toBe(503);
    expect(((await (await fetch(`${admin}/readyz`)).json()) as { audit: string }).audit).toMatch(/^worker \d+: the audit log cannot be written \(ENOSPC\)$/);
    expect(await (await fetch(`${admin}/metrics`)).text()).toMatch(/^portcullis_audit_log_writable 0$/m);
    unlinkSync(auditFile);
    proxy.child.kill("SIGUSR2");
    await expect.poll(async () => (await fetch(`${admin}/readyz`)).status, { timeout: 10_000, interval: 100 }).toBe(200);
    proxy.child.kill("SIGTERM");
    expect(await proxy.exited).toBe(0);
    expect(lines(auditFile).map((line) => line.path).sort()).toEqual(["/w1", "/w2"]);
  });
});

describe.skipIf(!existsSync(FULL_DISK))("the audit log's outage, in process", () => {
  const record = (i: number, host = `h${i}.example`) => tunnelRecord({ host, port: 443, client: null, clientAddr: "127.0.0.1:1" }, 0, { status: 200 });
  const hostsIn = (file: string) => (existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean).map((line) => (JSON.parse(line) as { host: string }).host) : []);
  const opened: number[] = [];
  afterAll(() => opened.forEach((fd) => fs.closeSync(fd)));

  function watched(): { events: string[]; drops: () => number; health: AuditHealthListener } {
    const events: string[] = [];
    let dropped = 0;
    return {
      events,
      drops: () => dropped,
      health: {
        failed: (message) => events.push(`failed: ${message}`),
        recovered: (message) => events.push(`recovered: ${message}`),
        warn: (message) => events.push(`warn: ${message}`),
        dropped: () => dropped++,
      },
    };
  }

  /** Room on the disk again: the destination's writes now reach a real file (sonic-boom writes to its `fd`, read at every write). */
  function makeRoom(destination: { fd?: number }, name: string): string {
    const file = join(tempDir(name), "audit.log");
    const fd = fs.openSync(file, "a");
    opened.push(fd, destination.fd!);
    (destination as { fd: number }).fd = fd;
    return file;
  }

  it("holds lines up to AUDIT_HOLD_BYTES and drops and counts the rest, retries on its own, and writes what it held in order once the destination takes writes again", { timeout: 30_000 }, async () => {
    const { events, drops, health } = watched();
    const destination = openAuditDestination(FULL_DISK);
    const log = new AuditLog(FULL_DISK, new Scrubber(), destination, undefined, health);
    const bigHost = `${"x".repeat(64 * 1024)}.example`;
    // Each line is about 64 KiB: 300 of them are over the 16 MiB held.
    const total = Math.ceil((AUDIT_HOLD_BYTES * 1.2) / bigHost.length);
    for (let i = 0; i < total; i++) expect(() => log.write(record(i, `${i}.${bigHost}`))).not.toThrow();
    expect(log.failure).toBe("the audit log cannot be written (ENOSPC)");
    expect(events).toEqual([`failed: the audit log ${FULL_DISK} cannot be written: ENOSPC: no space left on device, write; held lines are retried every second`]);
    expect(drops()).toBeGreaterThan(0);
    expect(drops()).toBeLessThan(total);
    // An explicit flush (reload, close, exit) tries once and returns.
    log.flush();
    expect(log.failure).toBeDefined();

    const file = makeRoom(destination, "audit-outage-big");
    await expect.poll(() => log.failure, { timeout: AUDIT_RETRY_MS * 5, interval: 20 }).toBeUndefined();
    expect(events.at(-1)).toBe(`recovered: the audit log ${FULL_DISK} is written again; ${drops()} lines were dropped while it could not be`);
    const held = total - drops();
    expect(hostsIn(file).map((host) => Number(host.split(".")[0]))).toEqual(Array.from({ length: held }, (_, i) => i));
    log.write(record(total));
    log.flush();
    expect(hostsIn(file).at(-1)).toBe(`h${total}.example`);
    log.close();
  });

  it("keeps half of what it may hold for lines of exchanges that ran: refusals that sent nothing upstream cannot crowd them out", () => {
    const { drops, health } = watched();
    const log = new AuditLog(FULL_DISK, new Scrubber(), openAuditDestination(FULL_DISK), undefined, health);
    const host = `${"r".repeat(64 * 1024)}.example`;
    // The outage's own 503s and any other refusal that sent nothing upstream (a client with a wrong password retrying, say).
    const refusals = [
      { status: 503, error: { type: "audit_unavailable", message: "the audit log cannot be written (ENOSPC)" } },
      { status: 407, error: { type: "proxy_auth_required", message: "proxy authentication failed" } },
    ];
    const refusal = (i: number) => tunnelRecord({ host: `${i}.${host}`, port: 443, client: null, clientAddr: "127.0.0.1:1" }, 0, refusals[i % 2]!);
    const half = Math.ceil(AUDIT_HOLD_BYTES / 2 / host.length);
    for (let i = 0; i < half * 2; i++) log.write(refusal(i));
    expect(log.failure).toBeDefined();
    // Refusals past half the hold are dropped...
    expect(drops()).toBeGreaterThanOrEqual(half - 2);
    expect(drops()).toBeLessThanOrEqual(half + 2);
    // ...while lines of exchanges that ran are still held until the hold itself is full.
    const before = drops();
    for (let i = 0; i < half - 8; i++) log.write(record(i, `${i}.${host}`));
    expect(drops()).toBe(before);
    log.write(refusal(half * 2));
    expect(drops()).toBe(before + 1);
    log.close();
  });

  it.each(["the retry timer", "an explicit flush"])("writes a backlog of small lines whole once the destination takes writes again (%s)", async (how) => {
    const { events, health } = watched();
    const destination = openAuditDestination(FULL_DISK);
    const log = new AuditLog(FULL_DISK, new Scrubber(), destination, undefined, health);
    // About 300 bytes a line: the backlog is several of sonic-boom's chunks, the last under its minLength.
    for (let i = 0; i < 70; i++) log.write(record(i));
    expect(log.failure).toBeDefined();
    const file = makeRoom(destination, "audit-outage-small");
    if (how === "an explicit flush") log.flush();
    else await expect.poll(() => log.failure, { timeout: AUDIT_RETRY_MS * 5, interval: 20 }).toBeUndefined();
    expect(log.failure).toBeUndefined();
    expect(hostsIn(file)).toEqual(Array.from({ length: 70 }, (_, i) => `h${i}.example`));
    expect(events.at(-1)).toBe(`recovered: the audit log ${FULL_DISK} is written again; no line was lost`);
    log.close();
  });

  it("keeps writing to the file it has open when a reopen cannot open the new one, says so, and reopens cleanly later", () => {
    const { events, health } = watched();
    const file = join(tempDir("audit-reopen-fails"), "audit.log");
    const destination = openAuditDestination(file);
    const log = new AuditLog(file, new Scrubber(), destination, undefined, health);
    const readyListeners = () => (destination as unknown as EventEmitter).listenerCount("ready");
    const waiting = readyListeners();
    log.write(record(1));
    renameSync(file, `${file}.1`);
    mkdirSync(file); // where the new file would go: EISDIR
    expect(() => log.reopen()).not.toThrow();
    expect(events).toHaveLength(1);
    expect(events[0]).toMatch(new RegExp(`^warn: the audit log ${escapeRegExp(file)} cannot be reopened \\(EISDIR`));
    // sonic-boom's listener that would close the descriptor still in use is gone with the failed open.
    expect(readyListeners()).toBe(waiting);
    log.write(record(2));
    log.flush();
    expect(log.failure).toBeUndefined();
    expect(hostsIn(`${file}.1`)).toEqual(["h1.example", "h2.example"]);

    rmdirSync(file);
    log.reopen();
    log.write(record(3));
    log.flush();
    expect(hostsIn(file)).toEqual(["h3.example"]);
    expect(hostsIn(`${file}.1`)).toEqual(["h1.example", "h2.example"]);
    expect(events).toHaveLength(1);
    log.close();
    (destination as unknown as { destroy(): void }).destroy();
  });

  it("says how much is lost when it closes while the destination still refuses writes", () => {
    const { events, health } = watched();
    const log = new AuditLog(FULL_DISK, new Scrubber(), openAuditDestination(FULL_DISK), undefined, health);
    for (let i = 0; i < 5; i++) log.write(record(i));
    log.flush();
    expect(log.failure).toBeDefined();
    log.close();
    expect(events.at(-1)).toMatch(new RegExp(`^warn: the audit log ${escapeRegExp(FULL_DISK)} still cannot be written: \\d+ bytes of audit lines are lost$`));
  });

  it("ends the outage when a reload moves the log elsewhere, and says what the old destination's held lines cost", () => {
    const { events, health } = watched();
    const dir = tempDir("audit-outage-retarget");
    const link = join(dir, "full.log");
    symlinkSync(FULL_DISK, link);
    const log = new AuditLog(link, new Scrubber(), undefined, undefined, health);
    for (let i = 0; i < 20; i++) log.write(record(i));
    expect(log.failure).toBeDefined();
    const next = join(dir, "audit.log");
    expect(log.retarget(next, new Scrubber())).toBe(true);
    expect(log.failure).toBeUndefined();
    expect(events.at(-1)).toMatch(new RegExp(`^recovered: the audit log ${escapeRegExp(next)} is written again; \\d+ bytes held for the previous destination were lost$`));
    log.write(record(20));
    log.flush();
    expect(hostsIn(next)).toEqual(["h20.example"]);
    log.close();
  });
});
