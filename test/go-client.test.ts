// A real Go program (net/http, test/go/h2client/main.go) through portcullis' tunnel: Go's
// transport does CONNECT, trusts portcullis' CA and negotiates h2 by ALPN, as a Go agent in a
// sandbox would with HTTPS_PROXY set. Needs the `go` command (`make system-tools` installs it).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { constants, accessSync, mkdirSync, rmSync } from "node:fs";
import http2, { type Http2SecureServer, type Http2Session, type IncomingHttpHeaders } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type AuditLine, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const SOURCE_DIR = join(dirname(fileURLToPath(import.meta.url)), "go", "h2client");
const UPLOAD_BYTES = 2 * 1024 * 1024;
const GET_BODY = "hello from the h2-only upstream\n".repeat(64);

/** What the Go program prints, one JSON line per request. */
interface GoResult {
  method: string;
  proto: string;
  status: number;
  header: Record<string, string[]>;
  body_bytes: number;
  body_sha256: string;
  body: string;
  trailer: Record<string, string[]>;
  sent_bytes?: number;
  sent_sha256?: string;
  request_content_length: number;
}

interface SeenStream {
  headers: IncomingHttpHeaders;
  /** ALPN the upstream's session negotiated ("h2" here: it allows nothing else). */
  alpn: string | false | undefined;
  bytes: number;
  sha256: string;
  /** The request's trailing HEADERS, if any. */
  trailers: IncomingHttpHeaders | undefined;
}

const sha256 = (data: string | Buffer) => createHash("sha256").update(data).digest("hex");

let work: string;
let binary: string;
let goEnv: NodeJS.ProcessEnv;
let pki: ServerPki;
let h2Upstream: Http2SecureServer;
let h2Port: number;
const h2Sessions = new Set<Http2Session>();
const h2Seen: SeenStream[] = [];
let h1Upstream: TestUpstream;
const h1Seen: { url: string; headers: Record<string, string | string[] | undefined>; bytes: number; sha256: string; trailers: Record<string, string | undefined> }[] = [];
let proxy: TestProxy;
const children = new Set<ChildProcess>();
const buildTimes: number[] = [];

function run(file: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    // A hung child is killed (and so reported) rather than left to the test timeout.
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
    child.once("error", (error) => {
      clearTimeout(timer);
      children.delete(child);
      reject(error);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function goEnvValue(name: string): Promise<string | null> {
  return new Promise((resolve) => execFile("go", ["env", name], (error, stdout) => resolve(error ? null : stdout.trim())));
}

function writable(dir: string): boolean {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Runs the built Go client and parses its JSON lines; a non-zero exit fails with its stderr. */
async function goClient(target: string, upload = 0): Promise<GoResult[]> {
  const args = ["-proxy", proxy.url, "-ca", join(proxy.caDir, "ca.pem"), "-url", target];
  if (upload > 0) args.push("-upload", String(upload));
  const result = await run(binary, args, { env: goEnv });
  if (result.code !== 0) throw new Error(`h2client exited ${result.code ?? result.signal}:\n${result.stderr}\n${result.stdout}`);
  return result.stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as GoResult);
}

const auditFor = (path: string, method: string) => (line: AuditLine) => line.msg === "http" && line.path === path && line.method === method;

beforeAll(async () => {
  work = tempDir("go-client");
  binary = join(work, "h2client");
  // Offline on purpose: the program is one file of standard library, nothing may be fetched.
  goEnv = { ...process.env, GOPROXY: "off", GOFLAGS: "", GOWORK: "off", GOTOOLCHAIN: "local", GO111MODULE: "" };
  const cache = await goEnvValue("GOCACHE");
  if (!cache || cache === "off" || !writable(cache)) goEnv.GOCACHE = join(tmpdir(), "pcx-go-cache");
  const started = Date.now();
  const build = await run("go", ["build", "-o", binary, "main.go"], { env: goEnv, cwd: SOURCE_DIR, timeoutMs: 115_000 }).catch((error: NodeJS.ErrnoException) => {
    throw new Error(error.code === "ENOENT" ? "the `go` command is missing: run `make system-tools` (apt-get install golang-go)" : String(error));
  });
  if (build.code !== 0) throw new Error(`go build failed (${build.code ?? build.signal}):\n${build.stderr}`);
  buildTimes.push(Date.now() - started);

  pki = await makeUpstreamPki("go-upstream");

  // An h2-only upstream: a client that cannot speak h2 fails its TLS handshake here.
  h2Upstream = http2.createSecureServer({ key: pki.key, cert: pki.ipCert, SNICallback: pki.sniCallback, allowHTTP1: false });
  h2Upstream.on("session", (session: Http2Session) => {
    h2Sessions.add(session);
    session.once("close", () => h2Sessions.delete(session));
  });
  h2Upstream.on("stream", (stream, headers) => {
    const hash = createHash("sha256");
    let bytes = 0;
    let trailers: IncomingHttpHeaders | undefined;
    stream.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    stream.once("trailers", (received: IncomingHttpHeaders) => (trailers = received));
    stream.once("end", () => {
      const seen: SeenStream = { headers, alpn: stream.session?.alpnProtocol, bytes, sha256: hash.digest("hex"), trailers };
      h2Seen.push(seen);
      const body = headers[":method"] === "POST" ? JSON.stringify({ bytes: seen.bytes, sha256: seen.sha256 }) : GET_BODY;
      stream.respond({ ":status": 200, "content-type": headers[":method"] === "POST" ? "application/json" : "text/plain" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "x-body-sha256": sha256(body), "x-upstream-saw": `${headers[":method"]} ${headers[":path"]}` }));
      stream.end(body);
    });
  });
  await new Promise<void>((resolve) => h2Upstream.listen(0, "127.0.0.1", resolve));
  h2Port = (h2Upstream.address() as AddressInfo).port;

  // An HTTP/1.1-only upstream (node:https offers no h2), answering with chunked trailers.
  h1Upstream = await startUpstream((req, res) => {
    const hash = createHash("sha256");
    let bytes = 0;
    req.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    req.once("end", () => {
      const digest = hash.digest("hex");
      h1Seen.push({ url: req.url ?? "", headers: req.headers, bytes, sha256: digest, trailers: { ...req.trailers } });
      const body = req.method === "POST" ? JSON.stringify({ bytes, sha256: digest }) : `upstream (HTTP/${req.httpVersion}) saw ${req.method} ${req.url}`;
      res.writeHead(200, { "content-type": "text/plain", trailer: "X-Body-Sha256" });
      res.write(body);
      res.addTrailers({ "X-Body-Sha256": sha256(body) });
      res.end();
    });
  }, pki);

  proxy = await startProxy(policyTrusting(pki.caFile));
}, 120_000);

afterAll(async () => {
  for (const child of children) child.kill("SIGKILL");
  await proxy?.close();
  for (const session of h2Sessions) session.destroy();
  if (h2Upstream) await new Promise<void>((resolve) => h2Upstream.close(() => resolve()));
  await h1Upstream?.close();
  if (work) rmSync(work, { recursive: true, force: true });
  if (buildTimes.length) console.info(`go build of test/go/h2client took ${buildTimes.join(", ")} ms`);
});

describe("a Go net/http client through portcullis", () => {
  it("negotiates h2 with portcullis and reaches an h2-only upstream over h2, trailers included", async () => {
    const path = "/go/hello?case=get";
    const [get] = await goClient(`https://127.0.0.1:${h2Port}${path}`);

    expect(get).toMatchObject({ method: "GET", proto: "HTTP/2.0", status: 200, body_bytes: Buffer.byteLength(GET_BODY), body_sha256: sha256(GET_BODY) });
    // Go fills resp.Trailer from the h2 trailing HEADERS once the body has been read.
    expect(get!.trailer).toEqual({ "X-Body-Sha256": [sha256(GET_BODY)], "X-Upstream-Saw": [`GET ${path}`] });

    const seen = h2Seen.find((stream) => stream.headers[":path"] === path);
    expect(seen, "the upstream saw the request").toBeDefined();
    expect(seen!.alpn).toBe("h2");
    expect(seen!.headers).toMatchObject({ ":method": "GET", ":path": path, ":scheme": "https" });

    const line = await proxy.audit.waitFor(auditFor(path, "GET"));
    expect(line).toMatchObject({ status: 200, decision: "allow", scheme: "https", host: "127.0.0.1", port: h2Port, http_version: "2", upstream_version: "2" });
  });

  it("streams a 2 MiB upload with no Content-Length to the h2 upstream, byte for byte, request trailer included", async () => {
    const path = "/go/upload?case=h2";
    const [get, post] = await goClient(`https://127.0.0.1:${h2Port}${path}`, UPLOAD_BYTES);
    expect(get).toMatchObject({ proto: "HTTP/2.0", status: 200 });
    expect(post).toMatchObject({ method: "POST", proto: "HTTP/2.0", status: 200, request_content_length: -1, sent_bytes: UPLOAD_BYTES });

    const seen = h2Seen.find((stream) => stream.headers[":path"] === path && stream.headers[":method"] === "POST");
    expect(seen, "the upstream saw the upload").toBeDefined();
    expect(seen!.bytes).toBe(UPLOAD_BYTES);
    expect(seen!.sha256).toBe(post!.sent_sha256);
    // Nothing was buffered to learn a length: the upstream gets the stream as the client sent it.
    expect(seen!.headers["content-length"]).toBeUndefined();
    // Go's request trailer (sent after the body) reaches the upstream as trailing HEADERS.
    expect(seen!.trailers?.["x-sent-sha256"]).toBe(post!.sent_sha256);
    expect(JSON.parse(post!.body)).toEqual({ bytes: UPLOAD_BYTES, sha256: post!.sent_sha256 });
    expect(post!.trailer["X-Body-Sha256"]).toEqual([post!.body_sha256]);

    const line = await proxy.audit.waitFor(auditFor(path, "POST"));
    expect(line).toMatchObject({ status: 200, http_version: "2", upstream_version: "2", req_bytes: UPLOAD_BYTES });
  });

  it("still speaks h2 to the Go client when the upstream only speaks HTTP/1.1, trailers translated", async () => {
    const path = "/go/h1?case=translate";
    const target = `https://localhost:${h1Upstream.port}${path}`;
    const [get, post] = await goClient(target, UPLOAD_BYTES);

    const getBody = `upstream (HTTP/1.1) saw GET ${path}`;
    expect(get).toMatchObject({ method: "GET", proto: "HTTP/2.0", status: 200, body_sha256: sha256(getBody) });
    // HTTP/1.1 chunked trailers reach the h2 client as trailing HEADERS.
    expect(get!.trailer).toEqual({ "X-Body-Sha256": [sha256(getBody)] });

    expect(post).toMatchObject({ method: "POST", proto: "HTTP/2.0", status: 200, sent_bytes: UPLOAD_BYTES });
    const seenPost = h1Seen.find((seen) => seen.url === path && seen.bytes > 0);
    expect(seenPost, "the HTTP/1.1 upstream saw the upload").toBeDefined();
    expect(seenPost!.sha256).toBe(post!.sent_sha256);
    // An h2 body of unknown length goes to HTTP/1.1 chunked.
    expect(seenPost!.headers["content-length"]).toBeUndefined();
    expect(seenPost!.headers["transfer-encoding"]).toBe("chunked");
    // ...and its h2 trailing HEADERS become HTTP/1.1 chunked trailers.
    expect(seenPost!.trailers["x-sent-sha256"]).toBe(post!.sent_sha256);
    expect(JSON.parse(post!.body)).toEqual({ bytes: UPLOAD_BYTES, sha256: post!.sent_sha256 });

    const getLine = await proxy.audit.waitFor(auditFor(path, "GET"));
    expect(getLine).toMatchObject({ status: 200, host: "localhost", http_version: "2", upstream_version: "1.1" });
    const postLine = await proxy.audit.waitFor(auditFor(path, "POST"));
    expect(postLine).toMatchObject({ status: 200, http_version: "2", upstream_version: "1.1", req_bytes: UPLOAD_BYTES });
  });
});
