import { execFile, spawn } from "node:child_process";
import fs, { existsSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ProxyAgent, request } from "undici";
import { createProxy, type Proxy } from "../src/index.js";
import { AUDIT_FLUSH_MS } from "../src/log/audit-destination.js";
import { AuditLog } from "../src/log/loggers.js";
import { Scrubber } from "../src/log/scrub.js";
import { formatLine, type AuditLineFields } from "../src/log/tail-format.js";
import { tunnelRecord } from "../src/transport/audit.js";
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

const record = (i: number) => tunnelRecord({ host: `h${i}.example`, port: 443, client: null, clientAddr: "127.0.0.1:1" }, 0, { status: 200 });
const hostsIn = (file: string) => (existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean).map((line) => (JSON.parse(line) as { host: string }).host) : []);

/** A log of its own in a fresh folder. */
function freshLog(name: string): { file: string; log: AuditLog } {
  const file = join(tempDir(name), "audit.log");
  return { file, log: new AuditLog(file, new Scrubber()) };
}

describe("audit log on a FIFO", () => {
  it("refuses a FIFO no one reads, at once (the synchronous open would stop the proxy), and writes to one that has a reader", async () => {
    const fifo = join(tempDir("audit-fifo"), "audit.fifo");
    await promisify(execFile)("mkfifo", [fifo]);
    const started = Date.now();
    expect(() => new AuditLog(fifo, new Scrubber())).toThrow(/FIFO with no reader/);
    expect(Date.now() - started).toBeLessThan(1000);
    const reader = spawn("cat", [fifo]);
    let read = "";
    reader.stdout.on("data", (chunk: Buffer) => (read += chunk.toString()));
    try {
      // The reader's open may come a moment after the spawn: tried until it is there.
      let log: AuditLog | undefined;
      await expect.poll(() => {
        try {
          log ??= new AuditLog(fifo, new Scrubber());
        } catch {
          // no reader yet
        }
        return log !== undefined;
      }).toBe(true);
      log!.write(record(9));
      log!.close();
      await expect.poll(() => read).toContain('"host":"h9.example"');
    } finally {
      reader.kill();
    }
  });
});

describe("audit log appends", () => {
  it("metrics see the record as its line says it: scrubbed (a model name an upstream echoed can be a secret)", () => {
    const file = join(tempDir("audit-metrics-scrubbed"), "audit.log");
    const scrubber = new Scrubber();
    const secret = "sk-proj-REALopenaiKEY-9f8e7d6c5b4a";
    scrubber.add(secret);
    const seen: unknown[] = [];
    const log = new AuditLog(file, scrubber, undefined, (written) => seen.push(written));
    try {
      log.write({ ...record(1), llm: { model: secret, input_tokens: 3, output_tokens: 1 } } as unknown as Parameters<AuditLog["write"]>[0]);
      log.write(record(2));
      expect(JSON.stringify(seen)).not.toContain(secret);
      expect(seen[0]).toMatchObject({ llm: { model: "[REDACTED]", input_tokens: 3 } });
      // Nothing to scrub: the record itself, as before.
      expect(seen[1]).toMatchObject({ host: "h2.example" });
    } finally {
      log.close();
    }
  });

  it("a secret of digits, redacted inside a JSON number, does not break metrics or the live feed", () => {
    const file = join(tempDir("audit-numeric-secret"), "audit.log");
    const scrubber = new Scrubber();
    scrubber.add("4242");
    const seen: Record<string, unknown>[] = [];
    const log = new AuditLog(file, scrubber, undefined, (written) => seen.push(written as unknown as Record<string, unknown>));
    const published: unknown[] = [];
    const unsubscribe = log.feed.subscribe((line) => published.push(line));
    try {
      expect(() => log.write({ ...record(3), req_bytes: 4242, path: "/pin/4242", seen: { k4242: [4242, 7] } } as unknown as Parameters<AuditLog["write"]>[0])).not.toThrow();
      expect(seen[0]).toMatchObject({ req_bytes: 4242, path: "/pin/[REDACTED]" });
      // The live feed shows what the line says; only metrics count the number it was.
      expect(published[0]).toMatchObject({ path: "/pin/[REDACTED]", req_bytes: "[REDACTED]" });
    } finally {
      unsubscribe();
      log.close();
    }
    // The line itself parses (a redacted number is the string "[REDACTED]") and holds no 4242.
    const written = readFileSync(file, "utf8");
    expect(written).not.toContain("4242");
    const [line] = written.trim().split("\n").map((text) => JSON.parse(text) as Record<string, unknown>);
    expect(line).toMatchObject({ req_bytes: "[REDACTED]", path: "/pin/[REDACTED]", host: "h3.example", msg: expect.any(String) });
    expect(line!.seen).toEqual({ "k[REDACTED]": ["[REDACTED]", 7] });
  });

  it("a rebuilt line keeps its own time and level as numbers, reads in tail, and survives a secret inside a \\u escape", () => {
    const file = join(tempDir("audit-numeric-time"), "audit.log");
    const scrubber = new Scrubber();
    scrubber.add("4242");
    scrubber.add("0010");
    const log = new AuditLog(file, scrubber);
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(1_764_242_424_242);
    try {
      log.write({ ...record(4), req_bytes: 4242, path: "/a\u0010b", headers: JSON.parse('{"__proto__":"kept"}') } as unknown as Parameters<AuditLog["write"]>[0]);
    } finally {
      vi.useRealTimers();
      log.close();
    }
    const text = readFileSync(file, "utf8").trim();
    const line = JSON.parse(text) as Record<string, unknown>;
    expect(line).toMatchObject({ time: 1_764_242_424_242, level: 30, req_bytes: "[REDACTED]", path: "/a\u0010b" });
    expect(Object.hasOwn(line.headers as object, "__proto__")).toBe(true);
    expect(formatLine(line as AuditLineFields, false)).toContain("↑[REDACTED]");
    expect(formatLine({ ...line, time: "[REDACTED]" } as unknown as AuditLineFields, false)).toMatch(/^--:--:--\.---/);
  });

  it("writes several whole lines with each append, and every line within AUDIT_FLUSH_MS", async () => {
    const { file, log } = freshLog("audit-batch");
    const writes = vi.spyOn(fs, "writeSync");
    try {
      for (let i = 0; i < 40; i++) log.write(record(i));
      // 40 lines of about 330 bytes: appends of 4 KiB and more, not one a line.
      expect(writes.mock.calls.length).toBeGreaterThan(0);
      expect(writes.mock.calls.length).toBeLessThanOrEqual(4);
    } finally {
      writes.mockRestore();
    }
    const started = Date.now();
    await expect.poll(() => hostsIn(file).length, { timeout: 5_000, interval: 10 }).toBe(40);
    expect(Date.now() - started).toBeLessThan(AUDIT_FLUSH_MS + 1_000);
    expect(hostsIn(file)).toEqual(Array.from({ length: 40 }, (_, i) => `h${i}.example`));
    log.write(record(40));
    log.flush();
    expect(hostsIn(file).at(-1)).toBe("h40.example");
  });

  it("writes what it holds on its timer without an fsync (which would stall every connection), and syncs on an explicit flush", async () => {
    const { file, log } = freshLog("audit-nosync");
    const syncs = vi.spyOn(fs, "fsyncSync");
    try {
      for (let i = 0; i < 3; i++) log.write(record(i));
      await expect.poll(() => hostsIn(file).length, { timeout: 5_000, interval: 10 }).toBe(3);
      expect(syncs).not.toHaveBeenCalled();
      log.write(record(3));
      log.flush();
      expect(hostsIn(file).at(-1)).toBe("h3.example");
      expect(syncs).toHaveBeenCalled();
    } finally {
      syncs.mockRestore();
    }
  });

  it("writes what it holds to the old file before logrotate's reopen", () => {
    const { file, log } = freshLog("audit-rotate");
    log.write(record(1));
    log.write(record(2));
    renameSync(file, `${file}.1`);
    log.reopen();
    log.write(record(3));
    log.flush();
    expect(hostsIn(`${file}.1`)).toEqual(["h1.example", "h2.example"]);
    expect(hostsIn(file)).toEqual(["h3.example"]);
  });

  it.each(["exit", "throw"])("loses no line when the process ends without closing the log (%s)", async (how) => {
    const file = join(tempDir("audit-exit"), "audit.log");
    const fixture = join(import.meta.dirname, "fixtures", "audit-exit.ts");
    const ended = await promisify(execFile)(process.execPath, ["--import", "tsx", fixture, file, "5", how]).then(
      () => 0,
      (error: { code?: number }) => error.code,
    );
    expect(ended).toBe(how === "exit" ? 0 : 1);
    expect(hostsIn(file)).toEqual(["h0.example", "h1.example", "h2.example", "h3.example", "h4.example"]);
  });
});
