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
  if (isIpLiteral(name)) return ipaddr.process(name).toString();
  if (/[^\x00-\x7f]/.test(name)) return domainToASCII(name) || name;
  return name;
}

/** Patterns are the policy's (and a tail filter's): a bounded set, each normalised once rather than on every request. */
const comparedForms = new Map<string, string>();
const MAX_COMPARED_FORMS = 10_000;

/** What a host is compared with: the normalised name, or for `*.suffix` the normalised ".suffix". */
function comparedForm(pattern: string): string {
  let form = comparedForms.get(pattern);
  if (form !== undefined) return form;
  form = pattern.startsWith("*.") ? `.${normaliseHost(pattern.slice(2))}` : normaliseHost(pattern);
  if (comparedForms.size >= MAX_COMPARED_FORMS) comparedForms.clear();
  comparedForms.set(pattern, form);
  return form;
}

/** `*.suffix` matches any name under suffix but not suffix itself; anything else matches exactly. */
export function hostMatches(pattern: string, host: string): boolean {
  const form = comparedForm(pattern);
  if (pattern.startsWith("*.")) return host.length > form.length && host.endsWith(form);
  return form === host;
}

export function anyHostMatches(patterns: readonly string[], host: string): boolean {
  return patterns.some((pattern) => hostMatches(pattern, host));
}
