import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { ProxyError } from "../../core/errors.js";
import { getHeader, getHeaderValues, removeHeaders, setHeader, type RawHeaders } from "../../core/headers.js";
import { Sha256 } from "./sha256.js";
import { awsEncode, parseQuery, signerQuery, splitTarget } from "./query.js";
import { readSandboxSignature, scopeFromHost, type SandboxSignature, type SigningScope } from "./scope.js";

export interface AwsKeys {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** What is re-signed: the request exactly as it will be forwarded. */
export interface SignableRequest {
  method: string;
  /** Path and query as sent upstream. */
  target: string;
  headers: RawHeaders;
  /** The whole body, when it was read (needed only when the payload hash must be computed). */
  body?: Buffer;
}

export interface Resigned {
  target: string;
  headers: RawHeaders;
  /** Header signatures: what the chunk signatures of an aws-chunked body chain from. */
  seed?: { signature: string; date: Date; scope: SigningScope };
}

/** Payload hashes that say the body is framed as aws-chunked with per-chunk signatures to rewrite. */
export const SIGNED_STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/** The same, with trailing headers (a checksum) signed by a trailer signature after the last chunk. */
export const SIGNED_STREAMING_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
const UNSUPPORTED_STREAMING = new Set(["STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER"]);

/** Headers portcullis sets itself on a re-signed request; the sandbox's are never signed or forwarded. */
const SIGNATURE_HEADERS = new Set(["authorization", "x-amz-date", "x-amz-security-token"]);
/** How far ahead of portcullis' clock a presigned URL's date may be (AWS allows 15 minutes of skew). */
const PRESIGN_CLOCK_SKEW_MS = 15 * 60_000;
/** The longest lifetime AWS accepts for a presigned URL: seven days. */
const PRESIGN_MAX_EXPIRES_S = 7 * 24 * 3600;

/** Query parameters of a presigned URL that portcullis replaces. */
const SIGNATURE_PARAMS = new Set(["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"]);
/** The order the new presigned parameters are written in (the order AWS's own SDKs use). */
const PRESIGN_ORDER = ["X-Amz-Algorithm", "X-Amz-Content-Sha256", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-Security-Token", "X-Amz-SignedHeaders", "X-Amz-Signature"];

function hostName(headers: RawHeaders): string {
  const host = getHeader(headers, "host") ?? "";
  return host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.replace(/:\d+$/, "");
}

function signingScope(sandbox: SandboxSignature, headers: RawHeaders): SigningScope {
  const scope = sandbox.scope ?? scopeFromHost(hostName(headers));
  if (!scope) {
    throw new ProxyError(
      "credential_unavailable",
      `cannot tell the AWS region and service of ${hostName(headers) || "this request"}: sign it in the sandbox (any placeholder key) so its credential scope names them`,
    );
  }
  return scope;
}

/**
 * The headers to sign: those the sandbox signed (it knows what its service needs), plus Host
 * and every x-amz-* header, which AWS requires to be signed; every header when the sandbox did
 * not sign. Names in lower case, values of a repeated header joined with ",".
 */
function headersToSign(headers: RawHeaders, sandboxSigned: readonly string[] | undefined): Record<string, string> {
  const wanted = sandboxSigned ? new Set(sandboxSigned) : undefined;
  const signing: Record<string, string> = {};
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!.toLowerCase();
    if (SIGNATURE_HEADERS.has(name) || name in signing) continue;
    if (wanted && !wanted.has(name) && name !== "host" && !name.startsWith("x-amz-")) continue;
    signing[name] = getHeaderValues(headers, name).join(",");
  }
  return signing;
}

function signerFor(keys: AwsKeys, scope: SigningScope): SignatureV4 {
  return new SignatureV4({
    credentials: keys,
    region: scope.region,
    service: scope.service,
    sha256: Sha256,
    // S3 signs the path as sent; every other service signs it encoded once more (botocore and the SDKs alike).
    uriEscapePath: scope.service !== "s3",
    applyChecksum: false,
  });
}

function isS3(scope: SigningScope): boolean {
  return scope.service === "s3";
}

async function signHeaders(request: SignableRequest, sandbox: SandboxSignature, scope: SigningScope, keys: AwsKeys, now: Date): Promise<Resigned> {
  const { path, query } = splitTarget(request.target);
  let wire = request.headers;
  const contentSha = getHeader(wire, "x-amz-content-sha256");
  if (contentSha !== undefined && UNSUPPORTED_STREAMING.has(contentSha)) {
    throw new ProxyError("credential_unavailable", `cannot re-sign a ${contentSha} upload: SigV4a (ECDSA) streaming is not supported; use SigV4 (AWS4-HMAC-SHA256)`);
  }
  const signing = headersToSign(wire, sandbox.signedHeaders);
  if (contentSha === undefined && isS3(scope)) {
    // S3 wants the payload hash as a header; it is computed from the body portcullis read.
    const hash = new Sha256();
    hash.update(request.body ?? new Uint8Array(0));
    const hex = Buffer.from(await hash.digest()).toString("hex");
    wire = setHeader(wire, "X-Amz-Content-Sha256", hex);
    signing["x-amz-content-sha256"] = hex;
  }
  const signed = await signerFor(keys, scope).sign(
    new HttpRequest({ method: request.method, protocol: "https:", hostname: hostName(wire), path, query: signerQuery(parseQuery(query)), headers: signing, body: request.body }),
    { signingDate: now },
  );
  const authorization = signed.headers["authorization"]!;
  wire = setHeader(wire, "Authorization", authorization);
  wire = setHeader(wire, "X-Amz-Date", signed.headers["x-amz-date"]!);
  wire = keys.sessionToken ? setHeader(wire, "X-Amz-Security-Token", keys.sessionToken) : removeHeaders(wire, new Set(["x-amz-security-token"]));
  const signature = /Signature=([0-9a-f]{64})/.exec(authorization)![1]!;
  return { target: request.target, headers: wire, seed: { signature, date: now, scope } };
}

async function presign(request: SignableRequest, sandbox: SandboxSignature, scope: SigningScope, keys: AwsKeys, now: Date): Promise<Resigned> {
  const { path, query } = splitTarget(request.target);
  const kept = parseQuery(query).filter((pair) => !SIGNATURE_PARAMS.has(pair.name));
  // The sandbox's presigned URL signs headers only through SignedHeaders: Host, and whatever else it named.
  const wire = removeHeaders(request.headers, SIGNATURE_HEADERS);
  const signing = headersToSign(wire, sandbox.signedHeaders ?? ["host"]);
  const keepAsHeaders = new Set(Object.keys(signing).filter((name) => name.startsWith("x-amz-")));
  const unsignable = new Set<string>();
  if (isS3(scope)) {
    // S3 presigned URLs never sign the payload (a browser cannot send its hash).
    signing["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
    keepAsHeaders.add("x-amz-content-sha256");
    unsignable.add("x-amz-content-sha256");
  }
  const signed = await signerFor(keys, scope).presign(
    new HttpRequest({ method: request.method, protocol: "https:", hostname: hostName(wire), path, query: signerQuery(kept), headers: signing, body: request.body }),
    {
      // The sandbox's date and lifetime: the re-signed URL expires exactly when the sandbox's would
      // have. Not a date to come, though: forwarded now, a URL dated next year would be a real
      // credential for that week, signed today.
      signingDate: sandbox.date && sandbox.date.getTime() <= now.getTime() + PRESIGN_CLOCK_SKEW_MS ? sandbox.date : now,
      expiresIn: Math.min(sandbox.expiresIn ?? 900, PRESIGN_MAX_EXPIRES_S),
      unhoistableHeaders: keepAsHeaders,
      unsignableHeaders: unsignable,
    },
  );
  const signedQuery = signed.query ?? {};
  const added = PRESIGN_ORDER.flatMap((name) => {
    const value = signedQuery[name];
    return typeof value === "string" ? [`${name}=${awsEncode(value)}`] : [];
  });
  const pairs = [...kept.map((pair) => pair.raw), ...added];
  return { target: `${path}?${pairs.join("&")}`, headers: wire };
}

/**
 * Signs the request as it will be forwarded with the real key: the sandbox's signature (its
 * Authorization or its presigned query parameters) is dropped and replaced. Region and service
 * come from the sandbox's credential scope, else from the host. Canonicalisation and signing
 * are AWS's own signer (@smithy/signature-v4).
 */
export async function resignRequest(request: SignableRequest, keys: AwsKeys, now = new Date()): Promise<Resigned> {
  const { query } = splitTarget(request.target);
  const params = new Map(parseQuery(query).map((pair) => [pair.name, pair.value]));
  const sandbox = readSandboxSignature(request.headers, params);
  const scope = signingScope(sandbox, request.headers);
  return sandbox.kind === "query" ? presign(request, sandbox, scope, keys, now) : signHeaders(request, sandbox, scope, keys, now);
}

/** Whether portcullis must read the body to sign it: no X-Amz-Content-Sha256 says its hash, and the signature covers it. */
export function needsBodyHash(headers: RawHeaders, target: string): boolean {
  if (getHeader(headers, "x-amz-content-sha256") !== undefined) return false;
  const { query } = splitTarget(target);
  const presigned = parseQuery(query).some((pair) => pair.name === "X-Amz-Signature");
  if (!presigned) return true;
  const scope = readSandboxSignature(headers, new Map(parseQuery(query).map((pair) => [pair.name, pair.value]))).scope ?? scopeFromHost(hostName(headers));
  return scope?.service !== "s3";
}

/** Signs the parts of an aws-chunked body, each signature chained from the one before. */
export interface ChunkSigner {
  chunk(prior: string, data: Buffer): Promise<string>;
  /** The trailer signature over the canonical trailers (`name:value\n` each). */
  trailer(prior: string, canonicalTrailers: string): Promise<string>;
}

/** The signer of one re-signed request, for the chunk (and trailer) signatures of its aws-chunked body. */
export function chunkSigner(keys: AwsKeys, seed: NonNullable<Resigned["seed"]>): ChunkSigner {
  const signer = signerFor(keys, seed.scope);
  const empty = new Uint8Array(0);
  const options = { signingDate: seed.date, signingRegion: seed.scope.region, signingService: seed.scope.service };
  const longDate = seed.date.toISOString().replace(/\.\d{3}/, "").replace(/[-:]/g, "");
  const scope = `${longDate.slice(0, 8)}/${seed.scope.region}/${seed.scope.service}/aws4_request`;
  return {
    // A chunk's string to sign is an event's with no headers: AWS4-HMAC-SHA256-PAYLOAD, date, scope, prior signature, hash(""), hash(data).
    chunk: (prior, data) => signer.sign({ headers: empty, payload: data }, { ...options, priorSignature: prior }),
    async trailer(prior, canonicalTrailers) {
      const hash = new Hash("sha256");
      hash.update(canonicalTrailers);
      const hashed = Buffer.from(await hash.digest()).toString("hex");
      return signer.sign(["AWS4-HMAC-SHA256-TRAILER", longDate, scope, prior, hashed].join("\n"), options);
    },
  };
}
