import { isIP } from "node:net";
import ipaddr from "ipaddr.js";
import { normaliseHost } from "./hosts.js";

/** `upstream.proxy` as written in the URL: where the parent is, and any credentials in it. */
export interface ParentProxyUrl {
  host: string;
  port: number;
  username?: string;
  password?: string;
}

const URL_FORM = 'expected "http://[user:pass@]HOST:PORT"';

/** Parses `http://[user:pass@]HOST:PORT`; a string is the reason it is not one. */
export function parseParentProxyUrl(text: string): ParentProxyUrl | string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `${URL_FORM}, got "${text.replace(/\/\/.*@/, "//…@")}"`;
  }
  if (url.protocol === "https:") return "a parent proxy reached over TLS (https://) is not supported: use http://HOST:PORT (TLS to the destination still runs end to end inside its CONNECT tunnel)";
  if (url.protocol !== "http:") return `${URL_FORM}: the scheme must be http`;
  if ((url.pathname !== "" && url.pathname !== "/") || url.search !== "" || url.hash !== "") return `${URL_FORM}: no path, query or fragment`;
  // URL drops the default port: an explicit ":80" is the only way to say 80.
  const port = url.port === "" ? (/:80\/?$/.test(text) ? 80 : undefined) : Number(url.port);
  if (port === undefined) return `${URL_FORM}: the port is required`;
  const parsed: ParentProxyUrl = { host: normaliseHost(url.hostname), port };
  if (url.username !== "") parsed.username = decodeURIComponent(url.username);
  if (url.password !== "") parsed.password = decodeURIComponent(url.password);
  return parsed;
}

/** An `upstream.no_proxy` entry: "*", a host, "*.suffix", ".suffix", an IP or a CIDR. */
export function noProxyProblem(entry: string): string | undefined {
  if (entry === "*") return undefined;
  if (entry.includes("/")) return ipaddr.isValidCIDR(entry) ? undefined : `"${entry}" is not a valid CIDR`;
  const name = entry.replace(/^\*?\./, "");
  if (isIP(name.replace(/^\[|\]$/g, ""))) return undefined;
  if (!/^[^\s*/:@[\]]+$/.test(name)) return `"${entry}" is not a host name, "*.suffix", ".suffix", IP address, CIDR or "*"`;
  return undefined;
}

/**
 * Whether a destination bypasses the parent (curl's NO_PROXY, with portcullis' host patterns):
 * "*" every host; "*.suffix" names under suffix; ".suffix" suffix and the names under it; an IP or
 * CIDR the host when it is an IP literal, or the address `upstream.resolve` maps it to; anything
 * else that exact host.
 */
export class NoProxy {
  private readonly everything: boolean;
  private readonly names: string[] = [];
  private readonly suffixes: string[] = [];
  private readonly networks: [ipaddr.IPv4 | ipaddr.IPv6, number][] = [];

  constructor(entries: readonly string[]) {
    this.everything = entries.includes("*");
    for (const entry of entries) {
      if (entry === "*") continue;
      if (entry.includes("/")) this.networks.push(ipaddr.parseCIDR(entry));
      else if (entry.startsWith("*.")) this.suffixes.push(`.${normaliseHost(entry.slice(2))}`);
      else if (entry.startsWith(".")) {
        const suffix = normaliseHost(entry.slice(1));
        this.names.push(suffix);
        this.suffixes.push(`.${suffix}`);
      } else if (isIP(normaliseHost(entry))) {
        const address = ipaddr.process(normaliseHost(entry));
        this.networks.push([address, address.kind() === "ipv4" ? 32 : 128]);
      } else this.names.push(normaliseHost(entry));
    }
  }

  /** `host` as portcullis dials it (normalised); `mappedTo` the address an upstream.resolve override gives it. */
  bypasses(host: string, mappedTo?: string): boolean {
    if (this.everything || this.names.includes(host)) return true;
    if (this.suffixes.some((suffix) => host.endsWith(suffix) && host.length > suffix.length)) return true;
    return [host, mappedTo].some((candidate) => candidate !== undefined && this.inNetworks(candidate));
  }

  private inNetworks(text: string): boolean {
    if (this.networks.length === 0 || !ipaddr.isValid(text)) return false;
    const address = ipaddr.process(text);
    return this.networks.some(([network, bits]) => address.kind() === network.kind() && address.match(network, bits));
  }
}

/** How a request to scheme://host:port would leave, for explain: directly, or through the parent and how. */
export function describeRoute(
  upstream: { proxy?: { host: string; port: number } | undefined; no_proxy: string[]; resolve: Record<string, string> },
  scheme: "http" | "https",
  host: string,
  port: number,
  tunnelled = false,
): string {
  if (!upstream.proxy) return "direct";
  const name = normaliseHost(host);
  const overrides = new Map(Object.entries(upstream.resolve).map(([entry, address]) => [normaliseHost(entry), address]));
  const parent = `parent proxy ${authority(upstream.proxy.host, upstream.proxy.port)}`;
  if (new NoProxy(upstream.no_proxy).bypasses(name, overrides.get(name))) return `direct: upstream.no_proxy lists ${host}, bypassing the ${parent}`;
  if (scheme === "http" && !tunnelled) return `through the ${parent}: the request in absolute form`;
  return `through the ${parent}: CONNECT ${authority(overrides.get(name) ?? host, port)}`;
}

function authority(host: string, port: number): string {
  return `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
}
