import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createHash, webcrypto } from "node:crypto";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type http from "node:http";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

/**
 * AWS SigV4 re-signing end to end: botocore signs in the "sandbox" with a placeholder key and
 * talks to portcullis as its HTTPS proxy; the upstream hands every request it receives to
 * botocore again (test/python/sigv4_verify.py), which checks the signature for the real key.
 */
const PYTHON = "/usr/bin/python3";
const VERIFY = join(import.meta.dirname, "python", "sigv4_verify.py");
const CLIENT = join(import.meta.dirname, "python", "aws_client.py");

const REAL = { access_key: "AKIAREALKEY000000001", secret_key: "real/Secret+Key/0123456789abcdefghijklmn" };
const REAL_SESSION = { access_key: "ASIAREALSESSION00001", secret_key: "realSessionSecret/abcdefghijklmnopqrstuvw", token: "RealSessionToken//abc+def==" };
const PLACEHOLDER = { access_key: "AKIAPLACEHOLDER00000", secret_key: "placeholder-secret-key", token: "PlaceholderSessionToken" };
const ENV = {
  PCX_T_AWS_AKID: REAL.access_key,
  PCX_T_AWS_SECRET: REAL.secret_key,
  PCX_T_AWS_S_AKID: REAL_SESSION.access_key,
  PCX_T_AWS_S_SECRET: REAL_SESSION.secret_key,
  PCX_T_AWS_S_TOKEN: REAL_SESSION.token,
};

interface Verdict {
  ok: boolean;
  problems: string[];
  kind?: "header" | "query";
  service?: string;
  region?: string;
  date?: string;
  expires?: number;
  body?: string;
  chunks?: number;
  trailers?: string[];
}

interface Received {
  host: string;
  method: string;
  target: string;
  headers: string[];
  verdict: Verdict;
}

/** A long-lived Python process speaking JSON lines: one job in, one answer out, in order (botocore is imported once). */
class PythonLines<T> {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly waiting: ((answer: T) => void)[] = [];

  constructor(script: string) {
    this.child = spawn(PYTHON, [script], {
      stdio: ["pipe", "pipe", "pipe"],
      // No AWS configuration of this machine may leak in: the jobs say everything.
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: tempDir("aws-home"), AWS_CONFIG_FILE: "/dev/null", AWS_SHARED_CREDENTIALS_FILE: "/dev/null", AWS_EC2_METADATA_DISABLED: "true" },
    });
    createInterface({ input: this.child.stdout }).on("line", (line) => this.waiting.shift()?.(JSON.parse(line) as T));
    this.child.stderr.on("data", (data: Buffer) => process.stderr.write(data));
  }

  ask(job: object): Promise<T> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.child.stdin.write(`${JSON.stringify(job)}\n`);
    });
  }

  close(): void {
    this.child.stdin.end();
    this.child.kill();
  }
}

let pki: ServerPki;
let upstream: TestUpstream;
let proxy: TestProxy;
let placeholderProxy: TestProxy;
let verifier: PythonLines<Verdict>;
let client: PythonLines<{ result?: Record<string, unknown>; error?: string }>;
const received: Received[] = [];

function keysFor(host: string) {
  return host.startsWith("s3.eu-west-1.") ? REAL_SESSION : REAL;
}

const handler: http.RequestListener = (req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    const host = (req.headers.host ?? "").replace(/:\d+$/, "");
    const headers: string[][] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
    void verifier.ask({ method: req.method, target: req.url, headers, body: body.toString("base64"), keys: keysFor(host), placeholder: PLACEHOLDER }).then((verdict) => {
      received.push({ host, method: req.method ?? "", target: req.url ?? "", headers: req.rawHeaders, verdict });
      if (!verdict.ok) {
        res.writeHead(403, { "Content-Type": "application/xml" });
        res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code><Message>${verdict.problems.join("; ").replace(/[<&>]/g, " ")}</Message></Error>`);
        return;
      }
      if (host.startsWith("sts.")) {
        res.writeHead(200, { "Content-Type": "text/xml" });
        res.end(
          '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/agent</Arn>' +
            "<UserId>AIDAEXAMPLE</UserId><Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
        );
        return;
      }
      if (req.method === "GET") {
        res.writeHead(200, { "Content-Type": "text/plain", ETag: '"abc"' });
        res.end("hello from s3");
        return;
      }
      const decoded = Buffer.from(verdict.body ?? "", "base64");
      res.writeHead(200, { ETag: `"${createHash("md5").update(decoded).digest("hex")}"` });
      res.end();
    });
  });
};

function endpoint(host: string): string {
  return `https://${host}:${upstream.port}`;
}

/** Runs one botocore operation, as the sandbox would: a failure rejects with botocore's error. */
async function aws(operation: string, job: Record<string, unknown>, through = proxy): Promise<Record<string, unknown>> {
  const answer = await client.ask({
    operation,
    proxy: through.url,
    ca: join(through.caDir, "ca.pem"),
    region: "us-east-1",
    endpoint: endpoint("s3.us-east-1.amazonaws.com"),
    bucket: "bucket",
    key: "dir/object name.txt",
    ...PLACEHOLDER,
    token: undefined,
    ...job,
  });
  if (answer.error !== undefined) throw new Error(`aws_client ${operation}: ${answer.error}`);
  return answer.result!;
}

function lastReceived(host: string): Received {
  const found = received.filter((entry) => entry.host === host).at(-1);
  if (!found) throw new Error(`${host} received nothing`);
  return found;
}

function header(raw: string[], name: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) return raw[i + 1];
  return undefined;
}

beforeAll(async () => {
  Object.assign(process.env, ENV);
  pki = await makeUpstreamPki("aws");
  verifier = new PythonLines<Verdict>(VERIFY);
  client = new PythonLines(CLIENT);
  upstream = await startUpstream(handler, pki);
  const hosts = ["s3.us-east-1.amazonaws.com", "sts.us-east-1.amazonaws.com", "s3.eu-west-1.amazonaws.com", "s3.ap-south-1.amazonaws.com", "s3.us-west-2.amazonaws.com"];
  proxy = await startProxy(`${policyFor(hosts)}`);
  // With placeholders in the policy the first 64 KiB of every body are read before it is judged: the rewrite must take them over.
  placeholderProxy = await startProxy(`${policyFor(hosts)}secrets: { dummy: { env: PCX_T_AWS_AKID } }
placeholders:
  - { name: dummy, placeholder: PCX_PLACEHOLDER_NOT_USED, secret: dummy, hosts: [example.com], in: [header, body] }
`);
});

function policyFor(hosts: string[]): string {
  return `version: 1
upstream:
  trust: [${JSON.stringify(pki.caFile)}]
  resolve: { ${hosts.map((host) => `${host}: 127.0.0.1`).join(", ")} }
network:
  default: deny
  allow_ips: [127.0.0.1/32]
  rules:
    - { name: aws, action: allow, hosts: ["*.amazonaws.com"], ports: [${upstream.port}] }
credentials:
  - name: aws
    hosts: [s3.us-east-1.amazonaws.com, sts.us-east-1.amazonaws.com]
    aws_sigv4: { access_key_id: { env: PCX_T_AWS_AKID }, secret_access_key: { env: PCX_T_AWS_SECRET } }
  - name: aws-session
    hosts: [s3.eu-west-1.amazonaws.com]
    aws_sigv4: { access_key_id: { env: PCX_T_AWS_S_AKID }, secret_access_key: { env: PCX_T_AWS_S_SECRET }, session_token: { env: PCX_T_AWS_S_TOKEN } }
  - name: aws-broken
    hosts: [s3.ap-south-1.amazonaws.com]
    aws_sigv4: { access_key_id: { env: PCX_T_AWS_UNSET_AKID }, secret_access_key: { env: PCX_T_AWS_SECRET } }
`;
}

afterAll(async () => {
  await proxy?.close();
  await placeholderProxy?.close();
  await upstream?.close();
  verifier?.close();
  client?.close();
  for (const name of Object.keys(ENV)) delete process.env[name];
});

describe("aws_sigv4 re-signing, checked by botocore on the upstream side", () => {
  it("re-signs a GET with the real key; the audit line names the credential and holds no key", async () => {
    const answer = await aws("get", {});
    expect(answer.body).toBe("hello from s3");
    const got = lastReceived("s3.us-east-1.amazonaws.com");
    expect(got.verdict).toMatchObject({ ok: true, kind: "header", service: "s3", region: "us-east-1" });
    expect(got.target).toBe("/bucket/dir/object%20name.txt");
    const line = await proxy.audit.waitFor((entry) => entry.method === "GET" && entry.host === "s3.us-east-1.amazonaws.com");
    expect(line.credentials).toEqual(["aws"]);
    const everything = proxy.audit.raw.join("") + proxy.diagnostics.raw.join("");
    expect(everything).not.toContain(REAL.secret_key);
    expect(everything).not.toContain(REAL.access_key);
  });

  it("re-signs a PUT whose body hash is signed (X-Amz-Content-Sha256 of the body)", async () => {
    const body = Buffer.from("a body of some length\n".repeat(100));
    const answer = await aws("put", { body: body.toString("base64") });
    expect(answer.etag).toBe(`"${createHash("md5").update(body).digest("hex")}"`);
    const got = lastReceived("s3.us-east-1.amazonaws.com");
    expect(got.verdict).toMatchObject({ ok: true, kind: "header" });
    expect(header(got.headers, "x-amz-content-sha256")).toBe(createHash("sha256").update(body).digest("hex"));
  });

  it("re-signs an UNSIGNED-PAYLOAD PUT without reading its body first", async () => {
    const body = Buffer.from("unsigned payload");
    await aws("put-unsigned", { body: body.toString("base64") });
    const got = lastReceived("s3.us-east-1.amazonaws.com");
    expect(got.verdict).toMatchObject({ ok: true, kind: "header" });
    expect(header(got.headers, "x-amz-content-sha256")).toBe("UNSIGNED-PAYLOAD");
    expect(Buffer.from(got.verdict.body!, "base64").toString()).toBe("unsigned payload");
  });

  it("rewrites every chunk signature of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload, chained from the new seed", async () => {
    const body = Buffer.alloc(200 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) % 251;
    const answer = await aws("put-streaming-signed", { body: body.toString("base64") });
    expect(answer.status).toBe(200);
    const got = lastReceived("s3.us-east-1.amazonaws.com");
    expect(got.verdict.problems).toEqual([]);
    expect(got.verdict.chunks).toBe(5);
    expect(Buffer.from(got.verdict.body!, "base64").equals(body)).toBe(true);
    const line = await proxy.audit.waitFor((entry) => entry.method === "PUT" && entry.req_bytes === Number(header(got.headers, "content-length")));
    expect(line.credentials).toEqual(["aws"]);
  });

  it("rewrites chunk signatures when the start of the body was already read for the placeholders", async () => {
    const body = Buffer.alloc(300 * 1024, 5);
    const answer = await aws("put-streaming-signed", { body: body.toString("base64") }, placeholderProxy);
    expect(answer.status).toBe(200);
    const got = lastReceived("s3.us-east-1.amazonaws.com");
    expect(got.verdict.problems).toEqual([]);
    expect(Buffer.from(got.verdict.body!, "base64").equals(body)).toBe(true);
    const line = await placeholderProxy.audit.waitFor((entry) => entry.method === "PUT");
    expect(line.req_bytes).toBe(Number(header(got.headers, "content-length")));
  });

  it("rewrites the chunk and trailer signatures of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER upload", async () => {
    const body = Buffer.alloc(150 * 1024, 9);
    const answer = await aws("put-streaming-signed-trailer", { body: body.toString("base64") });
    expect(answer.status).toBe(200);
    const got = lastReceived("s3.us-east-1.amazonaws.com");
    expect(got.verdict.problems).toEqual([]);
    expect(got.verdict.chunks).toBe(4);
    expect(got.verdict.trailers).toHaveLength(2);
    expect(Buffer.from(got.verdict.body!, "base64").equals(body)).toBe(true);
  });

  it("passes botocore's own streaming upload (aws-chunked with a CRC32 trailer, STREAMING-UNSIGNED-PAYLOAD-TRAILER)", async () => {
    const body = Buffer.from("trailer checksum upload ".repeat(500));
    await aws("put-trailer", { body: body.toString("base64") });
    const got = lastReceived("s3.us-east-1.amazonaws.com");
    expect(got.verdict).toMatchObject({ ok: true, kind: "header" });
    expect(header(got.headers, "x-amz-content-sha256")).toBe("STREAMING-UNSIGNED-PAYLOAD-TRAILER");
    expect(got.verdict.trailers?.some((line) => line.startsWith("x-amz-checksum-crc32:"))).toBe(true);
    expect(Buffer.from(got.verdict.body!, "base64").equals(body)).toBe(true);
  });

  it("re-signs a presigned GET in its query, keeping the sandbox's date and expiry", async () => {
    const answer = await aws("presign-get", { expires: 600 });
    expect(answer.status).toBe(200);
    expect(answer.text).toBe("hello from s3");
    const clientUrl = new URL(answer.url as string);
    const got = lastReceived("s3.us-east-1.amazonaws.com");
    expect(got.verdict).toMatchObject({ ok: true, kind: "query", expires: 600, date: clientUrl.searchParams.get("X-Amz-Date") });
    expect(got.target).not.toContain(clientUrl.searchParams.get("X-Amz-Signature")!);
    expect(header(got.headers, "authorization")).toBeUndefined();
  });

  it("puts the real session token on (X-Amz-Security-Token, signed) in place of the sandbox's", async () => {
    const answer = await aws("get", { endpoint: endpoint("s3.eu-west-1.amazonaws.com"), region: "eu-west-1", token: PLACEHOLDER.token });
    expect(answer.body).toBe("hello from s3");
    const got = lastReceived("s3.eu-west-1.amazonaws.com");
    expect(got.verdict).toMatchObject({ ok: true, region: "eu-west-1" });
    expect(header(got.headers, "x-amz-security-token")).toBe(REAL_SESSION.token);
    const line = await proxy.audit.waitFor((entry) => entry.host === "s3.eu-west-1.amazonaws.com");
    expect(line.credentials).toEqual(["aws-session"]);
    expect(proxy.audit.raw.join("")).not.toContain(REAL_SESSION.token);
  });

  it("puts the real session token in a re-signed presigned URL", async () => {
    const answer = await aws("presign-get", { endpoint: endpoint("s3.eu-west-1.amazonaws.com"), region: "eu-west-1", token: PLACEHOLDER.token, expires: 300 });
    expect(answer.status).toBe(200);
    const got = lastReceived("s3.eu-west-1.amazonaws.com");
    expect(got.verdict).toMatchObject({ ok: true, kind: "query", expires: 300 });
    expect(new URL(got.target, "https://x").searchParams.get("X-Amz-Security-Token")).toBe(REAL_SESSION.token);
  });

  it("drops the sandbox's session token when the real credential has none", async () => {
    await aws("get", { token: PLACEHOLDER.token });
    const got = lastReceived("s3.us-east-1.amazonaws.com");
    expect(got.verdict.problems).toEqual([]);
    expect(header(got.headers, "x-amz-security-token")).toBeUndefined();
  });

  it("computes the payload hash of a service that sends none (STS GetCallerIdentity, a form POST)", async () => {
    const answer = await aws("sts", { endpoint: endpoint("sts.us-east-1.amazonaws.com") });
    expect(answer.account).toBe("123456789012");
    const got = lastReceived("sts.us-east-1.amazonaws.com");
    expect(got.verdict).toMatchObject({ ok: true, service: "sts", region: "us-east-1" });
    expect(header(got.headers, "x-amz-content-sha256")).toBeUndefined();
  });

  it("the upstream check fails a request left as the sandbox signed it (a host no credential covers)", async () => {
    await expect(aws("get", { endpoint: endpoint("s3.us-west-2.amazonaws.com"), region: "us-west-2" })).rejects.toThrow(/SignatureDoesNotMatch/);
    const got = lastReceived("s3.us-west-2.amazonaws.com");
    expect(got.verdict.ok).toBe(false);
    expect(got.verdict.problems.join("\n")).toMatch(/placeholder 'AKIAPLACEHOLDER00000' was forwarded[\s\S]*signature mismatch/);
  });

  it("refuses a malformed aws-chunked body with 400 and abandons the upstream request", async () => {
    const placeholderAuth = `AWS4-HMAC-SHA256 Credential=${PLACEHOLDER.access_key}/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=${"0".repeat(64)}`;
    const body = "zz;chunk-signature=nothex\r\nhello\r\n";
    const answer = await request(`${endpoint("s3.us-east-1.amazonaws.com")}/bucket/broken`, {
      dispatcher: proxy.dispatcher,
      method: "PUT",
      headers: { authorization: placeholderAuth, "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "x-amz-date": "20260101T000000Z", "content-encoding": "aws-chunked", "content-length": String(body.length) },
      body,
    });
    const text = await answer.body.text();
    expect(answer.statusCode).toBe(400);
    expect(JSON.parse(text).error.type).toBe("bad_request");
    expect(text).toMatch(/aws-chunked upload body is malformed/);
    expect(received.some((entry) => entry.target === "/bucket/broken")).toBe(false);
  });

  /** An S3 PUT signed by the sandbox with the placeholder key and no X-Amz-Content-Sha256: portcullis must hash the body; botocore checks the result. */
  async function putWithoutPayloadHash(path: string, body: string | Buffer, contentType: string): Promise<void> {
    const placeholderAuth = `AWS4-HMAC-SHA256 Credential=${PLACEHOLDER.access_key}/20260101/us-east-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=${"0".repeat(64)}`;
    const answer = await request(`${endpoint("s3.us-east-1.amazonaws.com")}${path}`, {
      dispatcher: proxy.dispatcher,
      method: "PUT",
      headers: { authorization: placeholderAuth, "x-amz-date": "20260101T000000Z", "content-type": contentType },
      body,
    });
    await answer.body.text();
    expect(answer.statusCode).toBe(200);
    const got = lastReceived("s3.us-east-1.amazonaws.com");
    expect(got.verdict.problems).toEqual([]);
    expect(header(got.headers, "x-amz-content-sha256")).toBe(createHash("sha256").update(body).digest("hex"));
  }

  it("hashes the body itself, and sends the hash, for an S3 request that names none", async () => {
    await putWithoutPayloadHash("/bucket/hashed", "computed by portcullis", "text/plain");
  });

  it("hashes a large body on the thread pool (WebCrypto), not on the event loop, and the signature still holds", async () => {
    const body = Buffer.alloc(2 * 1024 * 1024, 0x62);
    const digest = vi.spyOn(webcrypto.subtle, "digest");
    try {
      await putWithoutPayloadHash("/bucket/large-hashed", body, "application/octet-stream");
      expect(digest.mock.calls.some(([, data]) => (data as ArrayBufferView).byteLength === body.length)).toBe(true);
    } finally {
      digest.mockRestore();
    }
  });

  it("refuses with 400, forwarding nothing, a body over 10 MiB whose hash it would have to compute", async () => {
    const before = received.length;
    const answer = await request(`${endpoint("sts.us-east-1.amazonaws.com")}/`, {
      dispatcher: proxy.dispatcher,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: Buffer.alloc(10 * 1024 * 1024 + 1, 0x61),
    });
    const text = await answer.body.text();
    expect(answer.statusCode).toBe(400);
    expect(JSON.parse(text).error.type).toBe("bad_request");
    expect(received.length).toBe(before);
  });

  it("answers 502 credential_unavailable and forwards nothing when the real key cannot be resolved", async () => {
    const before = received.length;
    await expect(aws("get", { endpoint: endpoint("s3.ap-south-1.amazonaws.com"), region: "ap-south-1" })).rejects.toThrow(/502/);
    const line = await proxy.audit.waitFor((entry) => entry.host === "s3.ap-south-1.amazonaws.com");
    expect(line.status).toBe(502);
    expect((line.error as { type: string }).type).toBe("credential_unavailable");
    expect(received.slice(before).some((entry) => entry.host === "s3.ap-south-1.amazonaws.com")).toBe(false);
  });
});
