import { isIP } from "node:net";
import { normaliseHost } from "../policy/hosts.js";
import type { Scheme, Target } from "../core/messages.js";
import { ProxyError } from "../core/errors.js";

const DEFAULT_PORT: Record<Scheme, number> = { http: 80, https: 443 };

export interface Authority {
  host: string;
  port: number | undefined;
}

/** Parses "host", "host:port", "[v6]" or "[v6]:port"; undefined when it is none of those. */
export function parseAuthority(text: string, options: { allowPortZero?: boolean } = {}): Authority | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]/@?#]+))(?::(\d{1,5}))?$/.exec(text.trim());
  if (!match) return undefined;
  const host = match[1] ?? match[2]!;
  if (match[1] !== undefined && isIP(host) !== 6) return undefined;
  const port = match[3] === undefined ? undefined : Number(match[3]);
  if (port !== undefined && (port < (options.allowPortZero ? 0 : 1) || port > 65535)) return undefined;
  const normalised = normaliseHost(host);
  if (match[2] !== undefined && !judgeableName(normalised)) return undefined;
  return { host: normalised, port };
}

/**
 * Whether a host, normalised, has the one spelling every later step reads the same way. Refused:
 * the empty name (".", which the resolver reads as localhost) and an empty label ("a..", ".a", or
 * a trailing dot left after the one dropped), which the resolver and a second normalisation read
 * as another name than the rules judged; and an IPv4 address in any form but four decimal numbers
 * ("2130706434", "0x7f.1", "127.000.0.1"), which getaddrinfo dials as the address while no IP
 * rule matches the text.
 */
function judgeableName(host: string): boolean {
  if (host === "") return false;
  if (isIP(host) !== 0) return true;
  if (host.startsWith(".") || host.endsWith(".") || host.includes("..")) return false;
  const last = host.slice(host.lastIndexOf(".") + 1);
  return !/^(?:\d+|0x[0-9a-f]*)$/.test(last);
}

/** The authority of a CONNECT request: the port is required. */
export function parseConnectAuthority(text: string): { host: string; port: number } | undefined {
  const authority = parseAuthority(text);
  return authority?.port === undefined ? undefined : { host: authority.host, port: authority.port };
}

export function formatAuthority(host: string, port: number, scheme?: Scheme): string {
  // Every IPv6 address has a colon and no name does: most hosts skip isIP's two expressions (run for every request).
  const name = host.includes(":") && isIP(host) === 6 ? `[${host}]` : host;
  return scheme && DEFAULT_PORT[scheme] === port ? name : `${name}:${port}`;
}

export interface AbsoluteForm {
  target: Target;
  /** Path and query exactly as written, "/" when the URL had none. */
  path: string;
  authority: string;
}

/** Splits `http://host:port/path?q` without normalising the path (the upstream gets the client's bytes). */
export function parseAbsoluteForm(url: string): AbsoluteForm | undefined {
  if (url.includes("#")) return undefined;
  const match = /^(https?):\/\/([^/?#]*)([^#]*)/i.exec(url);
  if (!match) return undefined;
  const scheme = match[1]!.toLowerCase() as Scheme;
  const authorityText = match[2]!;
  if (authorityText.includes("@")) return undefined;
  const authority = parseAuthority(authorityText);
  if (!authority || authority.host === "") return undefined;
  const rest = match[3]!;
  const path = rest === "" ? "/" : rest.startsWith("?") ? `/${rest}` : rest;
  const port = authority.port ?? DEFAULT_PORT[scheme];
  return { target: { scheme, host: authority.host, port }, path, authority: formatAuthority(authority.host, port, scheme) };
}

/**
 * The request-target of a request inside a tunnel must stay on the tunnel's host: a Host
 * header (or absolute URL) naming anything else is refused, so a tunnel opened for an
 * allowed host cannot reach a denied one.
 */
export function pathInTunnel(url: string, hostHeader: string | undefined, target: Target): string {
  // A fragment never belongs in a request target (RFC 9112 3.2); one would make the path the
  // policy judges differ from the path the upstream serves.
  if (url.includes("#")) throw new ProxyError("bad_request", "request target contains a fragment (#)");
  let path = url;
  if (!url.startsWith("/")) {
    const absolute = parseAbsoluteForm(url);
    if (!absolute) {
      if (url !== "*") throw new ProxyError("bad_request", `malformed request target "${url.slice(0, 100)}"`);
    } else {
      assertSameHost(absolute.target.host, absolute.target.port, target, "request URL");
      path = absolute.path;
    }
  }
  if (hostHeader === undefined) throw new ProxyError("bad_request", "request has no Host header");
  const authority = parseAuthority(hostHeader);
  if (!authority) throw new ProxyError("bad_request", `malformed Host header "${hostHeader.slice(0, 100)}"`);
  assertSameHost(authority.host, authority.port, target, "Host header");
  return path;
}

function assertSameHost(host: string, port: number | undefined, target: Target, what: string): void {
  const portMatches = port === undefined || port === target.port;
  if (host !== target.host || !portMatches) {
    throw new ProxyError(
      "bad_request",
      `${what} names ${formatAuthority(host, port ?? target.port)} but this tunnel was opened for ${formatAuthority(target.host, target.port)}`,
    );
  }
}

/** host:port of a target, as error messages name it. */
export function upstreamName(target: Target): string {
  return formatAuthority(target.host, target.port);
}
