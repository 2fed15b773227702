import { execFile } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { assertBuilt, runCli, startCli, type RunningProxy } from "./helpers/cli.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const exec = promisify(execFile);
let pki: ServerPki;
let upstream: TestUpstream;
let work: string;
let running: RunningProxy | undefined;

beforeAll(async () => {
  assertBuilt();
  pki = await makeUpstreamPki();
  upstream = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, { "Content-Type": "text/plain" }).end(`upstream saw ${req.method} ${req.url}`);
  }, pki);
  work = tempDir("cli");
});

afterAll(async () => {
  running?.child.kill("SIGKILL");
  await upstream?.close();
});

function writePolicy(name: string, body: string): string {
  const file = join(work, name);
  writeFileSync(file, body);
  return file;
}

describe("portcullis init-ca", () => {
  it("creates the CA, prints how to trust it, refuses to overwrite, replaces with --force", () => {
    const dir = join(work, "ca-init");
    const first = runCli(["init-ca", "--dir", dir]);
    expect(first.status).toBe(0);
    for (const hint of ["update-ca-certificates", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"]) {
      expect(first.stdout).toContain(hint);
    }
    expect(statSync(join(dir, "ca-key.pem")).mode & 0o777).toBe(0o600);
    const cert = readFileSync(join(dir, "ca.pem"), "utf8");
    const again = runCli(["init-ca", "--dir", dir]);
    expect(again.status).toBe(1);
    expect(again.stderr).toContain("--force");
    expect(readFileSync(join(dir, "ca.pem"), "utf8")).toBe(cert);
    expect(runCli(["init-ca", "--dir", dir, "--force"]).status).toBe(0);
    expect(readFileSync(join(dir, "ca.pem"), "utf8")).not.toBe(cert);
  });

  it("exits 2 on a usage error", () => {
    expect(runCli(["init-ca", "--bogus"]).status).toBe(2);
    expect(runCli([]).status).toBe(2);
    expect(runCli(["frobnicate"]).status).toBe(2);
    const headroom = runCli(["start", "--policy", "policies/default.yaml"], { cwd: join(import.meta.dirname, ".."), env: { PORTCULLIS_HEAP_HEADROOM_MIB: "lots" } });
    expect(headroom.status).toBe(2);
    expect(headroom.stderr).toContain('PORTCULLIS_HEAP_HEADROOM_MIB must be a whole number of MiB (0 turns the headroom off), not "lots"');
  });
});

describe("portcullis check", () => {
  it("exits 0 for the default policy", () => {
    const result = runCli(["check", "--policy", "policies/default.yaml"], { cwd: join(import.meta.dirname, "..") });
    expect(result.status).toBe(0);
  });

  it("reports every error as FILE:LINE:COL: message and exits 1", () => {
    const file = writePolicy("bad.yaml", "version: 1\nupstream:\n  connect_timeout: soon\n  bogus_key: 1\nlog:\n  level: loud\n");
    const result = runCli(["check", "--policy", file]);
    expect(result.status).toBe(1);
    const lines = result.stderr.trim().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(new RegExp(`^${file}:3:20: upstream\\.connect_timeout: expected a duration`));
    expect(lines[1]).toMatch(new RegExp(`^${file}:4:3: upstream\\.bogus_key: unknown key "bogus_key"`));
    expect(lines[2]).toMatch(new RegExp(`^${file}:6:10: log\\.level: `));
  });

  it("reports YAML syntax errors with their position", () => {
    const file = writePolicy("syntax.yaml", "version: 1\nproxy:\n  listen: [unclosed\n");
    const result = runCli(["check", "--policy", file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(new RegExp(`^${file}:\\d+:\\d+: `));
  });

  it("shows a policy's control characters as \\xNN in its warnings too", () => {
    const file = writePolicy("escapes.yaml", 'version: 1\nsecrets:\n  x: { env: "PCX_NOPE\\e]0;pwned\\a" }\n');
    const result = runCli(["check", "--policy", file]);
    expect(result.stderr).toContain("\\x1b]0;pwned\\x07");
    expect(result.stderr).not.toMatch(/\u001b/);
  });

  it("names a missing policy file", () => {
    const result = runCli(["check", "--policy", join(work, "nope.yaml")]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("nope.yaml:1:1: cannot read policy");
  });
});

describe("portcullis start", () => {
  it("creates a missing CA, serves curl, openssl and python through the tunnel, reloads on SIGHUP, drains on SIGTERM", { timeout: 60_000 }, async () => {
    const caDir = join(work, "start-ca");
    const policyFile = writePolicy(
      "start.yaml",
      `version: 1\nca: { dir: ${JSON.stringify(caDir)} }\nupstream: { trust: [${JSON.stringify(pki.caFile)}] }\nnetwork: { default: allow, allow_ips: [127.0.0.1/32] }\n`,
    );
    running = await startCli(["--policy", policyFile, "--listen", "127.0.0.1:0"]);
    const proxy = running;
    const caFile = join(caDir, "ca.pem");
    expect(existsSync(caFile)).toBe(true);
    const target = `https://localhost:${upstream.port}/from-curl?x=1`;

    const curl = await exec("curl", ["-sS", "--fail", "--cacert", caFile, "-x", `http://127.0.0.1:${proxy.port}`, target]);
    expect(curl.stdout).toBe("upstream saw GET /from-curl?x=1");
    await proxy.waitForOutput(/"path":"\/from-curl\?x=1"/, "stdout");
    const line = JSON.parse(proxy.stdout().trim().split("\n").find((l) => l.includes("/from-curl"))!) as Record<string, unknown>;
    expect(line).toMatchObject({ msg: "http", status: 200, host: "localhost", port: upstream.port, scheme: "https" });

    // The chain sent to clients is the leaf alone (the self-signed CA is the anchor they hold); openssl verifies it.
    const sClient = await exec("sh", [
      "-c",
      `echo | openssl s_client -proxy 127.0.0.1:${proxy.port} -connect localhost:${upstream.port} -servername localhost -CAfile ${caFile} -showcerts -verify_return_error 2>&1`,
    ]);
    expect(sClient.stdout).toContain("Verify return code: 0 (ok)");
    expect(sClient.stdout.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);

    const python = await exec("python3", [
      "-c",
      [
        "import socket, ssl, sys",
        `s = socket.create_connection(('127.0.0.1', ${proxy.port}))`,
        `s.sendall(b'CONNECT localhost:${upstream.port} HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n')`,
        "head = b''",
        "while b'\\r\\n\\r\\n' not in head: head += s.recv(1)",
        "assert head.startswith(b'HTTP/1.1 200'), head",
        `ctx = ssl.create_default_context(cafile=${JSON.stringify(caFile)})`,
        "ctx.verify_flags |= ssl.VERIFY_X509_STRICT",
        "t = ctx.wrap_socket(s, server_hostname='localhost')",
        `t.sendall(b'GET /from-python HTTP/1.1\\r\\nHost: localhost:${upstream.port}\\r\\nConnection: close\\r\\n\\r\\n')`,
        "data = b''",
        "while True:",
        "    chunk = t.recv(65536)",
        "    if not chunk: break",
        "    data += chunk",
        "sys.stdout.write(data.decode())",
      ].join("\n"),
    ]);
    expect(python.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(python.stdout).toContain("upstream saw GET /from-python");

    // An invalid policy on SIGHUP is rejected and the running one kept.
    writeFileSync(policyFile, "version: 1\nupstream: { connect_timeout: never }\n");
    proxy.child.kill("SIGHUP");
    await proxy.waitForOutput(/policy reload rejected/);
    expect(proxy.stderr()).toContain("connect_timeout");
    const stillUp = await exec("curl", ["-sS", "--fail", "--cacert", caFile, "-x", `http://127.0.0.1:${proxy.port}`, target]);
    expect(stillUp.stdout).toContain("upstream saw GET");

    // A valid one is taken: localhost becomes a passthrough host, so curl now sees the upstream's own certificate.
    writeFileSync(
      policyFile,
      `version: 1\nca: { dir: ${JSON.stringify(caDir)} }\nupstream: { trust: [${JSON.stringify(pki.caFile)}] }\nnetwork: { default: allow, allow_ips: [127.0.0.1/32] }\npassthrough: { hosts: [localhost] }\n`,
    );
    proxy.child.kill("SIGHUP");
    await proxy.waitForOutput(/policy reloaded/);
    const passthrough = await exec("curl", ["-sS", "--fail", "--cacert", pki.caFile, "-x", `http://127.0.0.1:${proxy.port}`, `https://localhost:${upstream.port}/passthrough`]);
    expect(passthrough.stdout).toBe("upstream saw GET /passthrough");
    await proxy.waitForOutput(/"msg":"tunnel"/, "stdout");

    // Saving the file reloads it too, without a signal.
    writeFileSync(
      policyFile,
      `version: 1\nca: { dir: ${JSON.stringify(caDir)} }\nupstream: { trust: [${JSON.stringify(pki.caFile)}] }\nnetwork: { default: allow, allow_ips: [127.0.0.1/32] }\n`,
    );
    await proxy.waitForOutput(/"trigger":"file changed"[^\n]*"msg":"policy reloaded"/);
    const intercepted = await exec("curl", ["-sS", "--fail", "--cacert", caFile, "-x", `http://127.0.0.1:${proxy.port}`, `https://localhost:${upstream.port}/after-save`]);
    expect(intercepted.stdout).toBe("upstream saw GET /after-save");

    proxy.child.kill("SIGTERM");
    expect(await proxy.exited).toBe(0);
    running = undefined;
  });

  it("refuses to start on an invalid policy with exit 1", () => {
    const file = writePolicy("invalid-start.yaml", "version: 2\n");
    const result = runCli(["start", "--policy", file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`${file}:1:10: version`);
  });
});
