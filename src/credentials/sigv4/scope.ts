import { getHeader, type RawHeaders } from "../../core/headers.js";

/** Where a signature applies: the region and service of a SigV4 credential scope. */
export interface SigningScope {
  region: string;
  service: string;
}

/** What the sandbox's own signature says, as far as re-signing needs it. */
export interface SandboxSignature {
  /** `header`: Authorization; `query`: a presigned URL (X-Amz-Signature in the query). */
  kind: "header" | "query" | "none";
  scope?: SigningScope;
  /** The headers the sandbox signed (lower case), as its SignedHeaders said. */
  signedHeaders?: string[];
  /** Presigned only: the sandbox's X-Amz-Date and X-Amz-Expires, kept so the URL expires when it would have. */
  date?: Date;
  expiresIn?: number;
}

/** `Credential=AKID/DATE/REGION/SERVICE/aws4_request`: region and service, if the scope is well formed. */
export function scopeFromCredential(credential: string): SigningScope | undefined {
  const parts = credential.split("/");
  if (parts.length < 5 || parts[parts.length - 1] !== "aws4_request") return undefined;
  const [region, service] = parts.slice(-3, -1) as [string, string];
  return region && service ? { region, service } : undefined;
}

/** The parameters of `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`. */
function authorizationParams(value: string): Map<string, string> | undefined {
  const match = /^\s*AWS4-[A-Z0-9-]+\s+(.*)$/s.exec(value);
  if (!match) return undefined;
  const params = new Map<string, string>();
  for (const part of match[1]!.split(",")) {
    const at = part.indexOf("=");
    if (at > 0) params.set(part.slice(0, at).trim(), part.slice(at + 1).trim());
  }
  return params;
}

/** `20260102T030405Z` → a Date (the SigV4 basic ISO 8601 form). */
export function parseAmzDate(text: string): Date | undefined {
  const match = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (!match) return undefined;
  const [, y, mo, d, h, mi, s] = match.map(Number) as number[];
  return new Date(Date.UTC(y!, mo! - 1, d!, h!, mi!, s!));
}

/** The sandbox's signature: from Authorization, else from a presigned query (decoded params), else none. */
export function readSandboxSignature(headers: RawHeaders, query: ReadonlyMap<string, string>): SandboxSignature {
  const authorization = getHeader(headers, "authorization");
  const params = authorization === undefined ? undefined : authorizationParams(authorization);
  if (params) {
    const credential = params.get("Credential");
    return {
      kind: "header",
      scope: credential === undefined ? undefined : scopeFromCredential(credential),
      signedHeaders: params.get("SignedHeaders")?.toLowerCase().split(";").filter(Boolean),
    };
  }
  if (query.has("X-Amz-Signature")) {
    const credential = query.get("X-Amz-Credential");
    const expires = Number(query.get("X-Amz-Expires"));
    return {
      kind: "query",
      scope: credential === undefined ? undefined : scopeFromCredential(credential),
      signedHeaders: query.get("X-Amz-SignedHeaders")?.toLowerCase().split(";").filter(Boolean),
      date: parseAmzDate(query.get("X-Amz-Date") ?? ""),
      expiresIn: Number.isInteger(expires) && expires > 0 ? expires : undefined,
    };
  }
  return { kind: "none" };
}

const REGION = /^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d+$/;

/**
 * Region and service from an AWS endpoint name, for a request the sandbox did not sign:
 * s3.amazonaws.com, BUCKET.s3.amazonaws.com and s3-external-1 (us-east-1), s3.REGION / s3-REGION /
 * s3.dualstack.REGION (with or without a bucket in front), SERVICE.REGION.amazonaws.com(.cn),
 * and global SERVICE.amazonaws.com (us-east-1). Anything else: undefined.
 */
export function scopeFromHost(host: string): SigningScope | undefined {
  const name = host.toLowerCase().replace(/\.$/, "");
  const suffix = /\.amazonaws\.com(\.cn)?$/.exec(name);
  if (!suffix) return undefined;
  const labels = name.slice(0, suffix.index).split(".");
  const s3At = labels.findIndex((label) => label === "s3" || label.startsWith("s3-"));
  if (s3At >= 0) {
    const label = labels[s3At]!;
    if (label === "s3-external-1") return { region: "us-east-1", service: "s3" };
    if (label.startsWith("s3-") && REGION.test(label.slice(3))) return { region: label.slice(3), service: "s3" };
    const region = labels.slice(s3At + 1).find((part) => REGION.test(part));
    return { region: region ?? (suffix[1] ? "cn-north-1" : "us-east-1"), service: "s3" };
  }
  const last = labels[labels.length - 1]!;
  if (labels.length >= 2 && REGION.test(last)) return { region: last, service: labels[labels.length - 2]! };
  if (labels.length === 1) return { region: suffix[1] ? "cn-north-1" : "us-east-1", service: labels[0]! };
  return undefined;
}
