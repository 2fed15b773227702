import { tokenMatches } from "../admin/token-check.js";

/** `Authorization: Bearer TOKEN` against the admin token: equal-length digests, constant time. */
export function adminAuthorized(header: string | undefined, adminToken: string): boolean {
  const match = /^\s*Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  // A missing or malformed header still costs a comparison.
  return tokenMatches(match?.[1] ?? "", adminToken) && match !== null;
}
