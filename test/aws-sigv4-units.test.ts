import { createHash, createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ProxyError } from "../src/core/errors.js";
import { ChunkResigner } from "../src/credentials/sigv4/chunks.js";
import { resignRequest } from "../src/credentials/sigv4/sign.js";
import { POOLED_HASH_BYTES, Sha256 } from "../src/credentials/sigv4/sha256.js";
import { scopeFromCredential, scopeFromHost } from "../src/credentials/sigv4/scope.js";
import { parsePolicy } from "../src/policy/load.js";
import { explain } from "../src/proxy/explain.js";

const KEYS = { accessKeyId: "AKIAREAL", secretAccessKey: "secret" };

/** A stand-in chunk signer (the real one is checked against botocore end to end): HMAC of prior and data. */
const fakeSign = (prior: string, data: Buffer | string) => Promise.resolve(createHmac("sha256", prior).update(data).digest("hex"));
const fakeSigner = { chunk: fakeSign, trailer: (prior: string, canonical: string) => fakeSign(`trailer:${prior}`, canonical) };

async function rewrite(parts: (string | Buffer)[], trailer = false): Promise<Buffer> {
  const resigner = new ChunkResigner("seed", fakeSigner, trailer);
  const out: Buffer[] = [];
  resigner.on("data", (chunk: Buffer) => out.push(chunk));
  const done = new Promise<void>((resolve, reject) => resigner.on("end", resolve).on("error", reject));
  for (const part of parts) resigner.write(part);
  resigner.end();
  await done;
  return Buffer.concat(out);
}

const SIG = "0".repeat(64);

describe("region and service from the host", () => {
  it.each([
    ["s3.amazonaws.com", "us-east-1", "s3"],
    ["bucket.s3.amazonaws.com", "us-east-1", "s3"],
    ["s3.eu-west-1.amazonaws.com", "eu-west-1", "s3"],
    ["my.bucket.s3.us-west-2.amazonaws.com", "us-west-2", "s3"],
    ["s3-eu-central-1.amazonaws.com", "eu-central-1", "s3"],
    ["s3.dualstack.ap-south-1.amazonaws.com", "ap-south-1", "s3"],
    ["s3-external-1.amazonaws.com", "us-east-1", "s3"],
    ["dynamodb.us-gov-west-1.amazonaws.com", "us-gov-west-1", "dynamodb"],
    ["sts.amazonaws.com", "us-east-1", "sts"],
    ["ec2.cn-north-1.amazonaws.com.cn", "cn-north-1", "ec2"],
  ])("%s → %s %s", (host, region, service) => {
    expect(scopeFromHost(host)).toEqual({ region, service });
  });

  it("knows no scope for other hosts", () => {
    expect(scopeFromHost("storage.internal")).toBeUndefined();
    expect(scopeFromHost("amazonaws.com.evil.example")).toBeUndefined();
  });

  it("reads a credential scope", () => {
    expect(scopeFromCredential("AKIA/20260101/eu-west-3/kms/aws4_request")).toEqual({ region: "eu-west-3", service: "kms" });
    expect(scopeFromCredential("AKIA/20260101/eu-west-3/kms")).toBeUndefined();
  });
});

describe("re-signing", () => {
  it("refuses, naming the host, a request whose region and service it cannot tell", async () => {
    const error = await resignRequest({ method: "GET", target: "/x", headers: ["Host", "storage.internal"] }, KEYS).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ProxyError);
    expect((error as ProxyError).type).toBe("credential_unavailable");
    expect((error as ProxyError).message).toMatch(/storage\.internal/);
  });

  it("signs the sandbox's signed headers, Host and every x-amz-* header, keeps the wire case and drops the sandbox's signature", async () => {
    const headers = [
      "host", "s3.eu-west-1.amazonaws.com",
      "X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD",
      "x-amz-meta-Colour", "blue",
      "X-Custom", "unsigned",
      "X-Amz-Date", "20200101T000000Z",
      "X-Amz-Security-Token", "placeholder-token",
      "Authorization", "AWS4-HMAC-SHA256 Credential=AKIAPLACE/20200101/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + SIG,
    ];
    const signed = await resignRequest({ method: "GET", target: "/b/k?list-type=2", headers }, KEYS, new Date(Date.UTC(2026, 0, 2, 3, 4, 5)));
    const auth = signed.headers[signed.headers.indexOf("Authorization") + 1]!;
    expect(auth).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIAREAL\/20260102\/eu-west-1\/s3\/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-colour, Signature=[0-9a-f]{64}$/);
    expect(signed.headers).toContain("X-Amz-Content-SHA256");
    expect(signed.headers[signed.headers.indexOf("X-Amz-Date") + 1]).toBe("20260102T030405Z");
    expect(signed.headers.map((name) => name.toLowerCase())).not.toContain("x-amz-security-token");
    expect(signed.target).toBe("/b/k?list-type=2");
  });

  it("re-signs a presigned URL the sandbox dated in the future with portcullis' own date, and within AWS's seven days", async () => {
    const now = new Date(Date.UTC(2026, 11, 4, 1, 2, 3));
    const query = (date: string, expires: number) =>
      `/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAPLACE%2F${date.slice(0, 8)}%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=${date}&X-Amz-Expires=${expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=${SIG}`;
    const params = async (target: string) => new URL((await resignRequest({ method: "GET", target, headers: ["Host", "s3.amazonaws.com"] }, KEYS, now)).target, "https://x").searchParams;
    const future = await params(query("20301231T000000Z", 604800));
    expect(future.get("X-Amz-Date")).toBe("20261204T010203Z");
    // A date within the clock skew, or past, is the sandbox's: the URL expires when its own would have.
    expect((await params(query("20261204T010500Z", 600))).get("X-Amz-Date")).toBe("20261204T010500Z");
    expect((await params(query("20261203T000000Z", 999999))).get("X-Amz-Expires")).toBe("604800");
  });
});

describe("aws-chunked chunk signatures", () => {
  it("rewrites each signature, chained, whatever the bytes arrive split at, and keeps the length", async () => {
    const body = `5;chunk-signature=${SIG}\r\nhello\r\n3;chunk-signature=${SIG}\r\nabc\r\n0;chunk-signature=${SIG}\r\n\r\n`;
    const first = await fakeSign("seed", Buffer.from("hello"));
    const second = await fakeSign(first, Buffer.from("abc"));
    const last = await fakeSign(second, Buffer.alloc(0));
    const want = `5;chunk-signature=${first}\r\nhello\r\n3;chunk-signature=${second}\r\nabc\r\n0;chunk-signature=${last}\r\n\r\n`;
    expect((await rewrite([body])).toString()).toBe(want);
    expect((await rewrite(body.split(""))).toString()).toBe(want);
  });

  it("signs the trailing headers of the -TRAILER variant, chained from the final chunk", async () => {
    const body = `3;chunk-signature=${SIG}\r\nabc\r\n0;chunk-signature=${SIG}\r\nx-amz-checksum-crc32:NSRBwg==\r\nx-amz-trailer-signature:${SIG}\r\n\r\n`;
    const first = await fakeSign("seed", Buffer.from("abc"));
    const last = await fakeSign(first, Buffer.alloc(0));
    const trailer = await fakeSigner.trailer(last, "x-amz-checksum-crc32:NSRBwg==\n");
    const want = `3;chunk-signature=${first}\r\nabc\r\n0;chunk-signature=${last}\r\nx-amz-checksum-crc32:NSRBwg==\r\nx-amz-trailer-signature:${trailer}\r\n\r\n`;
    expect((await rewrite([body], true)).toString()).toBe(want);
    expect((await rewrite(body.split(""), true)).toString()).toBe(want);
    await expect(rewrite([`0;chunk-signature=${SIG}\r\nx-amz-checksum-crc32:NSRBwg==\r\n\r\n`], true)).rejects.toThrow(/no x-amz-trailer-signature/);
  });

  it.each([
    ["a malformed size line", `zz;chunk-signature=${SIG}\r\n`, /expected "HEXSIZE;chunk-signature=SIGNATURE"/],
    ["a body cut short", `5;chunk-signature=${SIG}\r\nhel`, /ended before its final chunk/],
    ["data without its CRLF", `1;chunk-signature=${SIG}\r\nxyz`, /not followed by CRLF/],
    ["bytes after the final chunk", `0;chunk-signature=${SIG}\r\n\r\nmore`, /bytes follow its final chunk/],
    ["a chunk over the limit", `2000000;chunk-signature=${SIG}\r\n`, /over the 16777216-byte limit/],
  ])("refuses %s with 400 bad_request", async (_what, body, message) => {
    const error = await rewrite([body]).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ProxyError);
    expect((error as ProxyError).type).toBe("bad_request");
    expect((error as ProxyError).message).toMatch(message);
  });
});

describe("explain", () => {
  it("lists an aws_sigv4 credential by name, as signing, with no secret", async () => {
    const { policy } = parsePolicy(
      `version: 1
upstream: { resolve: { s3.us-east-1.amazonaws.com: 127.0.0.1 } }
network: { default: allow, allow_ips: [127.0.0.1/32] }
credentials:
  - name: aws
    hosts: ["*.amazonaws.com"]
    aws_sigv4: { access_key_id: { env: NOT_READ_BY_EXPLAIN }, secret_access_key: { env: NOT_READ_EITHER } }
`,
      "explain.yaml",
    );
    const result = await explain(policy, "GET", "https://s3.us-east-1.amazonaws.com/bucket/key", null);
    expect(result.credentials).toEqual([{ name: "aws", signs: "aws_sigv4", secrets: [] }]);
  });

  it("refuses a credential with aws_sigv4 and a header", () => {
    expect(() =>
      parsePolicy(
        `version: 1
credentials:
  - name: aws
    hosts: ["*.amazonaws.com"]
    header: { name: X, value: "\${secrets.x}" }
    aws_sigv4: { access_key_id: { env: A }, secret_access_key: { env: B } }
`,
        "bad.yaml",
      ),
    ).toThrow(/expected exactly one of header, query or aws_sigv4/);
  });
});

describe("the signer's SHA-256", () => {
  const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

  it("digests every size (either side of the thread-pool threshold), in pieces of every kind, as node:crypto does", async () => {
    for (const size of [0, 1, 1000, POOLED_HASH_BYTES - 1, POOLED_HASH_BYTES, 3 * POOLED_HASH_BYTES + 7]) {
      const data = Buffer.alloc(size, 0x5a);
      for (let i = 0; i < size; i++) data[i] = (i * 31) & 0xff;
      const whole = new Sha256();
      whole.update(data);
      const pieces = new Sha256();
      const third = Math.floor(size / 3);
      pieces.update(new Uint8Array(data.subarray(0, third)));
      pieces.update(data.buffer.slice(data.byteOffset + third, data.byteOffset + 2 * third));
      pieces.update(data.subarray(2 * third));
      const expected = createHash("sha256").update(data).digest("hex");
      expect(hex(await whole.digest())).toBe(expected);
      expect(hex(await pieces.digest())).toBe(expected);
    }
    const text = new Sha256();
    text.update("AWS4-HMAC-SHA256\nµ");
    expect(hex(await text.digest())).toBe(createHash("sha256").update("AWS4-HMAC-SHA256\nµ", "utf8").digest("hex"));
  });

  it("is an HMAC when given a secret, and starts afresh after reset", async () => {
    const hmac = new Sha256("AWS4secret");
    hmac.update("20260101");
    expect(hex(await hmac.digest())).toBe(createHmac("sha256", "AWS4secret").update("20260101").digest("hex"));
    const plain = new Sha256();
    plain.update("discarded");
    plain.reset();
    plain.update("kept");
    expect(hex(await plain.digest())).toBe(createHash("sha256").update("kept").digest("hex"));
  });
});
