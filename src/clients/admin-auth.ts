import { createHash, timingSafeEqual } from "node:crypto";

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** `Authorization: Bearer TOKEN` against the admin token: equal-length digests, constant time. */
export function adminAuthorized(header: string | undefined, adminToken: string): boolean {
  const match = /^\s*Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  // A missing or malformed header still costs a comparison.
  return timingSafeEqual(digest(match?.[1] ?? ""), digest(adminToken)) && match !== null;
}
