import { createHash, randomBytes } from "node:crypto";
import type { Rule } from "../policy/schema.js";

/**
 * A sandbox identity created through POST /v1/clients. Only a SHA-256 digest of its token is
 * kept (in memory, in the state file, in Redis): the token itself is shown once, to the caller
 * that created it. A digest is enough: the token is 32 random bytes, not a guessable password.
 */
export interface RegisteredClient {
  name: string;
  /** hex SHA-256 of the token */
  token_sha256: string;
  /** evaluated before the file's network.rules, for this client alone */
  rules: Rule[];
  /** names of the file's credentials enabled for this client */
  credentials: string[];
  created_at: string;
  expires_at: string;
}

/** 32 random bytes, base64url: usable as a Bearer token or in Basic name:token as it is. */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

export function tokenDigest(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export function expiresAtMs(client: RegisteredClient): number {
  return Date.parse(client.expires_at);
}

/** What GET /v1/clients shows: everything but the token digest. */
export function publicView(client: RegisteredClient): Omit<RegisteredClient, "token_sha256"> {
  const { token_sha256: _digest, ...rest } = client;
  return rest;
}

/** A record read back from a file or Redis, checked before it is trusted. */
export function isRegisteredClient(value: unknown): value is RegisteredClient {
  const record = value as Partial<RegisteredClient> | null;
  return (
    typeof record === "object" &&
    record !== null &&
    typeof record.name === "string" &&
    typeof record.token_sha256 === "string" &&
    /^[0-9a-f]{64}$/.test(record.token_sha256) &&
    Array.isArray(record.rules) &&
    Array.isArray(record.credentials) &&
    typeof record.created_at === "string" &&
    typeof record.expires_at === "string" &&
    Number.isFinite(Date.parse(record.expires_at))
  );
}
