import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, normalize } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, assertBuilt, runCli } from "./helpers/cli.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const exec = promisify(execFile);
const REPO_ROOT = join(import.meta.dirname, "..");
const SPEC_VARIABLES = [
  "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "NODE_EXTRA_CA_CERTS", "NODE_USE_ENV_PROXY",
  "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT", "NPM_CONFIG_CAFILE", "CARGO_HTTP_CAINFO",
  "AWS_CA_BUNDLE", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "DENO_CERT",
];

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: TestProxy;
let work: string;
let caFile: string;
let bareRepo: string;
let wheel: Buffer;
const WHEEL_NAME = "demo-1.0-py3-none-any.whl";

const sh = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;

/** Runs a script in an environment holding nothing but PATH, HOME and what `portcullis trust` exports. */
async function inCleanEnv(trustArgs: string[], script: string): Promise<{ stdout: string; stderr: string }> {
  const home = tempDir("trust-home");
  const trust = [process.execPath, CLI, "trust", ...trustArgs].map(sh).join(" ");
  return exec("env", ["-i", "PATH=/usr/bin:/bin", `HOME=${home}`, "/bin/sh", "-c", `set -e; eval "$(${trust})"; ${script}`], { cwd: REPO_ROOT, timeout: 40_000 });
}

async function makeWheel(dir: string): Promise<Buffer> {
  const file = join(dir, WHEEL_NAME);
  const script = [
    "import sys, zipfile",
    "files = {'demo/__init__.py': 'VALUE = 1\\n', 'demo-1.0.dist-info/METADATA': 'Metadata-Version: 2.1\\nName: demo\\nVersion: 1.0\\n',",
    "         'demo-1.0.dist-info/WHEEL': 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}",
    "files['demo-1.0.dist-info/RECORD'] = ''.join(f'{name},,\\n' for name in files) + 'demo-1.0.dist-info/RECORD,,\\n'",
    "with zipfile.ZipFile(sys.argv[1], 'w') as z:",
    "    [z.writestr(name, text) for name, text in files.items()]",
  ].join("\n");
  await exec("/usr/bin/python3", ["-c", script, file]);
  return readFileSync(file);
}

async function makeBareRepo(dir: string): Promise<string> {
  const source = join(dir, "source");
  const bare = join(dir, "repo.git");
  const git = (args: string[], cwd: string) => exec("git", ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", ...args], { cwd });
  mkdirSync(source);
  await git(["init", "-q"], source);
  writeFileSync(join(source, "README"), "through portcullis\n");
  await git(["add", "README"], source);
  await git(["commit", "-qm", "first"], source);
  await git(["clone", "-q", "--bare", source, bare], dir);
  // The "dumb" HTTP protocol: plain files, which any static server can serve.
  await git(["update-server-info"], bare);
  return bare;
}

beforeAll(async () => {
  assertBuilt();
  work = tempDir("trust");
  pki = await makeUpstreamPki();
  [wheel, bareRepo] = await Promise.all([makeWheel(work), makeBareRepo(work)]);
  upstream = await startUpstream((req, res) => {
    req.resume();
    const path = new URL(req.url ?? "/", "https://x").pathname;
    if (path === "/hello") return void res.end(`hello ${req.headers.host}`);
    if (path === "/simple/demo/") return void res.writeHead(200, { "Content-Type": "text/html" }).end(`<html><body><a href="/files/${WHEEL_NAME}">${WHEEL_NAME}</a></body></html>`);
    if (path === `/files/${WHEEL_NAME}`) return void res.writeHead(200, { "Content-Type": "application/octet-stream" }).end(wheel);
    if (path.startsWith("/repo.git/")) {
      const file = normalize(join(bareRepo, path.slice("/repo.git/".length)));
      if (file.startsWith(bareRepo) && existsSync(file)) return void res.end(readFileSync(file));
    }
    res.writeHead(404).end("not found");
  }, pki);
  const resolveTo = ["curl.test", "python.test", "git.test", "pypi.test", "node.test"].map((name) => `    ${name}: 127.0.0.1`).join("\n");
  proxy = await startProxy(
    `version: 1\nupstream:\n  trust: [${JSON.stringify(pki.caFile)}]\n  resolve:\n${resolveTo}\nnetwork:\n  default: allow\n  allow_ips: [127.0.0.1/32]\n`,
  );
  caFile = join(work, "portcullis-ca.pem");
  writeFileSync(caFile, proxy.caPem);
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

const target = (host: string, path: string) => `https://${host}:${upstream.port}${path}`;
const trustArgs = () => ["--ca", caFile, "--proxy", proxy.url];

describe("portcullis trust", () => {
  it("prints every variable of SPEC section 12, as export lines and as JSON", () => {
    const json = runCli(["trust", ...trustArgs(), "--format", "json"]);
    expect(json.status).toBe(0);
    const env = JSON.parse(json.stdout) as Record<string, string>;
    for (const name of SPEC_VARIABLES) expect(env, name).toHaveProperty(name);
    expect(env.https_proxy).toBe(proxy.url);
    expect(env.SSL_CERT_FILE).toBe(caFile);
    expect(env.NODE_USE_ENV_PROXY).toBe("1");
    const shell = runCli(["trust", ...trustArgs()]);
    expect(shell.stdout.trim().split("\n")).toHaveLength(SPEC_VARIABLES.length);
    expect(shell.stdout).toContain(`export http_proxy='${proxy.url}'\n`);
  });

  it("quotes values so that eval runs nothing in them", async () => {
    const marker = join(work, "pwned");
    const evil = `a'b $(touch ${marker}) \`touch ${marker}\` "c"`;
    const { stdout } = await inCleanEnv([...trustArgs(), "--no-proxy", evil], `printf %s "$no_proxy"`);
    expect(stdout).toBe(evil);
    expect(existsSync(marker)).toBe(false);
  });

  it("curl, python requests, git, pip and Node reach HTTPS upstreams through the proxy with only that environment", { timeout: 60_000 }, async () => {
    const curl = await inCleanEnv(trustArgs(), `curl -sS --fail ${target("curl.test", "/hello")}`);
    expect(curl.stdout).toBe(`hello curl.test:${upstream.port}`);

    const python = await inCleanEnv(trustArgs(), `/usr/bin/python3 -c "import requests; print(requests.get('${target("python.test", "/hello")}', timeout=20).text)"`);
    expect(python.stdout.trim()).toBe(`hello python.test:${upstream.port}`);

    const clone = join(work, "clone");
    const git = await inCleanEnv(trustArgs(), `git ls-remote ${target("git.test", "/repo.git")}; git clone -q ${target("git.test", "/repo.git")} ${clone}`);
    expect(git.stdout).toMatch(/^[0-9a-f]{40}\tHEAD$/m);
    expect(readFileSync(join(clone, "README"), "utf8")).toBe("through portcullis\n");

    const downloads = join(work, "downloads");
    await inCleanEnv(
      trustArgs(),
      `/usr/bin/python3 -m pip download --no-deps --no-cache-dir --disable-pip-version-check --index-url ${target("pypi.test", "/simple/")} -d ${downloads} demo`,
    );
    expect(readFileSync(join(downloads, WHEEL_NAME)).equals(wheel)).toBe(true);

    // Node >= 24 (and 22.21) honours the proxy variables itself with NODE_USE_ENV_PROXY=1; Node 20 through undici's EnvHttpProxyAgent.
    const major = Number(process.versions.node.split(".")[0]);
    const nodeScript =
      major >= 24
        ? `const r = await fetch('${target("node.test", "/hello")}'); console.log(await r.text());`
        : `import { EnvHttpProxyAgent, fetch } from 'undici'; const r = await fetch('${target("node.test", "/hello")}', { dispatcher: new EnvHttpProxyAgent() }); console.log(await r.text());`;
    const node = await inCleanEnv(trustArgs(), `${sh(process.execPath)} --input-type=module -e ${sh(nodeScript)}`);
    expect(node.stdout.trim()).toBe(`hello node.test:${upstream.port}`);

    // Every one of them went through portcullis, intercepted.
    for (const host of ["curl.test", "python.test", "git.test", "pypi.test", "node.test"]) {
      await proxy.audit.waitFor((line) => line.host === host && line.msg === "http" && line.status === 200);
    }
  });

  it("--java-truststore writes a PKCS#12 truststore keytool reads as a trustedCertEntry, and JAVA_TOOL_OPTIONS using it", async () => {
    const store = join(work, "truststore.p12");
    const result = runCli(["trust", ...trustArgs(), "--java-truststore", store, "--format", "json"]);
    expect(result.status).toBe(0);
    const env = JSON.parse(result.stdout) as Record<string, string>;
    const port = new URL(proxy.url).port;
    expect(env.JAVA_TOOL_OPTIONS).toBe(
      `-Djavax.net.ssl.trustStore=${store} -Djavax.net.ssl.trustStoreType=PKCS12 -Djavax.net.ssl.trustStorePassword=changeit ` +
        `-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=${port} -Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=${port} -Dhttp.nonProxyHosts=localhost|127.0.0.1|::1`,
    );
    const { stdout } = await exec("keytool", ["-list", "-keystore", store, "-storetype", "PKCS12", "-storepass", "changeit"]);
    expect(stdout).toContain("Your keystore contains 1 entry");
    expect(stdout).toMatch(/portcullis, .*, trustedCertEntry/);
    expect(stdout).toContain(new X509Certificate(proxy.caPem).fingerprint256);
    // The password guards the store's integrity: a wrong one is refused.
    await expect(exec("keytool", ["-list", "-keystore", store, "-storetype", "PKCS12", "-storepass", "wrong"])).rejects.toMatchObject({ stdout: expect.stringMatching(/integrity check failed/i) });
  });

  it("defaults the CA and the proxy URL from the policy, the CA relative to the policy's folder", () => {
    const dir = tempDir("trust-policy");
    mkdirSync(join(dir, "certs"));
    writeFileSync(join(dir, "certs", "ca.pem"), proxy.caPem);
    writeFileSync(join(dir, "policy.yaml"), "version: 1\nproxy: { listen: 127.0.0.1:18080 }\nca: { dir: certs }\n");
    const result = runCli(["trust", "--policy", join(dir, "policy.yaml"), "--format", "json"], { cwd: work });
    expect(result.status).toBe(0);
    const env = JSON.parse(result.stdout) as Record<string, string>;
    expect(env.HTTPS_PROXY).toBe("http://127.0.0.1:18080");
    expect(env.CURL_CA_BUNDLE).toBe(join(dir, "certs", "ca.pem"));
  });

  it("names a missing CA, and rejects a bad --format or --proxy with exit 2", () => {
    const missing = runCli(["trust", "--ca", join(work, "nope.pem"), "--proxy", "http://127.0.0.1:1"]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("nope.pem");
    expect(missing.stderr).toContain("init-ca");
    expect(runCli(["trust", ...trustArgs(), "--format", "yaml"]).status).toBe(2);
    expect(runCli(["trust", "--ca", caFile, "--proxy", "not a url"]).status).toBe(2);
  });
});
