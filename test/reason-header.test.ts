import { execFile } from "node:child_process";
import { connect } from "node:net";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headerReason, MAX_REASON_LENGTH } from "../src/core/reason-header.js";
import { h2Request, h2ThroughProxy } from "./helpers/h2.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const exec = promisify(execFile);
let pki: ServerPki;
let upstream: TestUpstream;
let plain: TestUpstream;
let proxy: TestProxy;
let authProxy: TestProxy;
let caFile: string;

const network = (port: number) =>
  `network:\n  default: deny\n  allow_ips: [127.0.0.1/32]\n  rules:\n    - { name: only-ok, action: allow, hosts: [localhost, 127.0.0.1], ports: [${port}], paths: ["/ok/**"] }\n`;

beforeAll(async () => {
  process.env.PCX_REASON_TEST_TOKEN = "s3cret-token";
  pki = await makeUpstreamPki();
  const handler = (_req: unknown, res: { end(text: string): void }) => res.end("upstream");
  upstream = await startUpstream((req, res) => (req.resume(), handler(req, res)), pki);
  plain = await startUpstream((req, res) => (req.resume(), handler(req, res)));
  proxy = await startProxy(policyTrusting(pki.caFile, `proxy: { http2: true }\n`, network(upstream.port)));
  authProxy = await startProxy(policyTrusting(pki.caFile, "clients:\n  - { name: agent, token: { env: PCX_REASON_TEST_TOKEN } }\n"));
  caFile = join(tempDir("reason"), "ca.pem");
  writeFileSync(caFile, proxy.caPem);
});

afterAll(async () => {
  await proxy?.close();
  await authProxy?.close();
  await upstream?.close();
  await plain?.close();
});

/** The status line and headers of the first answer on a raw connection to the proxy. */
function rawAnswer(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let data = "";
    socket.on("data", (chunk: Buffer) => {
      data += chunk.toString("latin1");
      if (data.includes("\r\n\r\n")) {
        socket.destroy();
        resolve(data.slice(0, data.indexOf("\r\n\r\n")));
      }
    });
    socket.once("error", reject);
    socket.write(bytes);
  });
}

describe("headerReason", () => {
  it("keeps printable ASCII, folds whitespace and line breaks, replaces the rest, bounds the length", () => {
    expect(headerReason("host  not\r\nallowed")).toBe("host not allowed");
    expect(headerReason("café ☕ \x00\x1b[31m")).toBe("cafe ? ??[31m");
    const long = headerReason("x".repeat(1000));
    expect(long).toHaveLength(MAX_REASON_LENGTH);
    expect(long.endsWith("...")).toBe(true);
  });
});

describe("X-Portcullis-Reason on every answer portcullis makes", () => {
  it("a refused CONNECT says why in its status line and headers (curl -v shows both)", async () => {
    const result = await exec("curl", ["-sS", "-v", "--cacert", caFile, "-x", proxy.url, "https://denied.example:443/"]).catch((error: { stderr: string }) => error);
    const line = await proxy.audit.waitFor((l) => l.msg === "denied" && l.host === "denied.example");
    expect(result.stderr).toContain(`< HTTP/1.1 403 Forbidden by portcullis: ${line.reason as string}`);
    expect(result.stderr).toContain("< X-Portcullis-Error: policy_denied");
    expect(result.stderr).toContain(`< X-Portcullis-Reason: ${line.reason as string}`);
  });

  it("python requests shows the reason of a refused CONNECT", async () => {
    const script = `import requests\ntry:\n    requests.get('https://denied.example/', proxies={'https': '${proxy.url}'}, timeout=10)\nexcept Exception as e:\n    print(e)\n`;
    const { stdout } = await exec("/usr/bin/python3", ["-c", script]);
    expect(stdout).toContain("403 Forbidden by portcullis:");
  });

  it("a request refused inside a tunnel (undici) carries the audit line's reason", async () => {
    const answer = await request(`https://localhost:${upstream.port}/nope`, { dispatcher: proxy.dispatcher });
    await answer.body.text();
    expect(answer.statusCode).toBe(403);
    const line = await proxy.audit.waitFor((l) => l.msg === "denied" && l.path === "/nope");
    expect(answer.headers["x-portcullis-error"]).toBe("policy_denied");
    expect(answer.headers["x-portcullis-reason"]).toBe(line.reason);
    expect(String(line.reason).length).toBeGreaterThan(0);
  });

  it("a plain-HTTP request refused by the listener carries it too", async () => {
    const head = await rawAnswer(proxy.port, `GET http://denied.example/x HTTP/1.1\r\nHost: denied.example\r\n\r\n`);
    expect(head).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(head).toMatch(/\r\nX-Portcullis-Reason: [ -~]+/);
  });

  it("an h2 answer carries it", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", upstream.port, proxy.caPem);
    try {
      const answer = await h2Request(session, { ":method": "GET", ":path": "/nope-h2", ":authority": `localhost:${upstream.port}` });
      expect(answer.headers[":status"]).toBe(403);
      expect(answer.headers["x-portcullis-error"]).toBe("policy_denied");
      const line = await proxy.audit.waitFor((l) => l.msg === "denied" && l.path === "/nope-h2");
      expect(answer.headers["x-portcullis-reason"]).toBe(line.reason);
    } finally {
      session.destroy();
    }
  });

  it("the 407 (CONNECT status line too) and the 400 / 431 / 414 for malformed requests", async () => {
    const refused = await rawAnswer(authProxy.port, `CONNECT localhost:${upstream.port} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    expect(refused).toMatch(/^HTTP\/1\.1 407 Proxy Authentication Required by portcullis: [ -~]+\r\n/);
    expect(refused).toContain("X-Portcullis-Error: proxy_auth_required");
    expect(refused).toMatch(/\r\nX-Portcullis-Reason: [ -~]+/);
    // A wrong token is refused without the token ever echoed.
    const wrong = await rawAnswer(authProxy.port, `CONNECT localhost:${upstream.port} HTTP/1.1\r\nHost: localhost\r\nProxy-Authorization: Bearer s3cret-token-wrong\r\n\r\n`);
    expect(wrong).toContain("X-Portcullis-Reason:");
    expect(wrong).not.toContain("s3cret");

    const malformed = await rawAnswer(proxy.port, "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    expect(malformed).toMatch(/^HTTP\/1\.1 400 /);
    expect(malformed).toMatch(/\r\nX-Portcullis-Error: bad_request\r\n/);
    expect(malformed).toMatch(/\r\nX-Portcullis-Reason: malformed HTTP request \(HPE_[A-Z_]+\)\r\n/);
    const tooBig = await rawAnswer(proxy.port, `GET http://localhost:${plain.port}/ HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`);
    expect(tooBig).toMatch(/^HTTP\/1\.1 431 /);
    expect(tooBig).toMatch(/\r\nX-Portcullis-Reason: request head over \d+ KiB\r\n/);
    const longUrl = await rawAnswer(proxy.port, `GET http://localhost:${plain.port}/${"a".repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(longUrl).toMatch(/^HTTP\/1\.1 414 /);
    expect(longUrl).toContain("X-Portcullis-Reason: request URL too long");
  });
});
