import { isIP } from "node:net";
import { domainToASCII } from "node:url";
import ipaddr from "ipaddr.js";

/** isIP, skipped for what cannot be an IP literal (no ':' and not only digits and dots): most hosts are names. */
export function isIpLiteral(host: string): boolean {
  return (host.includes(":") || !/[^\d.]/.test(host)) && isIP(host) !== 0;
}

/**
 * The one form hosts are compared and cached in: lower-case, no trailing dot, IDN in
 * punycode, IPv6 without brackets, IPv4-mapped IPv6 as plain IPv4.
 */
export function normaliseHost(host: string): string {
  let name = host.trim().toLowerCase();
  if (name.startsWith("[") && name.endsWith("]")) name = name.slice(1, -1);
  if (name.endsWith(".")) name = name.slice(0, -1);
  if (isIP(name)) return ipaddr.process(name).toString();
  if (/[^\x00-\x7f]/.test(name)) return domainToASCII(name) || name;
  return name;
}

/** `*.suffix` matches any name under suffix but not suffix itself; anything else matches exactly. */
export function hostMatches(pattern: string, host: string): boolean {
  if (pattern.startsWith("*.")) {
    const suffix = normaliseHost(pattern.slice(2));
    return host.length > suffix.length + 1 && host.endsWith(`.${suffix}`);
  }
  return normaliseHost(pattern) === host;
}

export function anyHostMatches(patterns: readonly string[], host: string): boolean {
  return patterns.some((pattern) => hostMatches(pattern, host));
}
