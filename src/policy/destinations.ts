import ipaddr from "ipaddr.js";

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** NAT64's local-use prefix (RFC 8215): translated by a translator of the site's own, for its own networks. */
const NAT64_LOCAL_USE = ipaddr.parseCIDR("64:ff9b:1::/48");

/** The IPv4 address an IPv6 address carries inside it (mapped, compatible, NAT64, 6to4), if any. */
function embeddedIpv4(address: ipaddr.IPv6): ipaddr.IPv4 | undefined {
  const range = address.range();
  const bytes = address.toByteArray();
  if (range === "ipv4Mapped") return address.toIPv4Address();
  // IPv4-compatible (::a.b.c.d): deprecated (RFC 4291), yet some stacks still route it to a.b.c.d.
  if (range === "unicast" && bytes.slice(0, 12).every((byte) => byte === 0)) return new ipaddr.IPv4(bytes.slice(12, 16));
  if (range === "rfc6052") return new ipaddr.IPv4(bytes.slice(12, 16));
  if (range === "6to4") return new ipaddr.IPv4(bytes.slice(2, 6));
  return undefined;
}

export interface Classification {
  /** true for a global unicast address */
  public: boolean;
  /** ipaddr.js' name for the range, e.g. "loopback", "linkLocal", "private", "unicast" */
  range: string;
}

/**
 * Public means global unicast: loopback, RFC 1918, link-local (169.254.169.254), CGNAT,
 * ULA, multicast, reserved and unspecified (0.0.0.0, ::) are private, and so is an IPv6
 * form that embeds one of them (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4
 * 2002::/16); so is all of NAT64's local-use 64:ff9b:1::/48.
 */
export function classifyAddress(text: string): Classification {
  const address = ipaddr.parse(text);
  if (address.kind() === "ipv6") {
    // Which IPv4 network its translator reaches is the site's own affair: never public.
    if ((address as ipaddr.IPv6).match(NAT64_LOCAL_USE)) return { public: false, range: "nat64LocalUse" };
    const v4 = embeddedIpv4(address as ipaddr.IPv6);
    if (v4) {
      const inner = classifyAddress(v4.toString());
      return { public: inner.public, range: `${(address as ipaddr.IPv6).range()}(${inner.range})` };
    }
  }
  const range = address.range();
  return { public: range === "unicast", range };
}

export class DestinationDenied extends Error {
  readonly code = "EPORTCULLIS_DESTINATION";
  constructor(message: string) {
    super(message);
    this.name = "DestinationDenied";
  }
}

/** Where portcullis itself listens, once it does. */
export interface SelfAddress {
  host?: string;
  port?: number;
  /** The admin listener's port, refused the same way. */
  adminPort?: number;
}

/** network.private_destinations and network.allow_ips, checked on every address portcullis dials. */
export class DestinationGuard {
  private readonly allowed: [Address, number][];

  constructor(
    private readonly privateDestinations: "deny" | "allow",
    allowIps: readonly string[],
    private readonly self: SelfAddress = {},
  ) {
    this.allowed = allowIps.map((entry) => {
      if (entry.includes("/")) return ipaddr.parseCIDR(entry);
      const address = ipaddr.parse(entry);
      return [address, address.kind() === "ipv4" ? 32 : 128];
    });
  }

  /** Why this address may not be dialled, or undefined if it may. */
  check(text: string): string | undefined {
    if (this.privateDestinations === "allow") return undefined;
    const address = ipaddr.process(text);
    if (this.isAllowListed(address)) return undefined;
    const { public: isPublic, range } = classifyAddress(address.toString());
    if (isPublic) return undefined;
    return `destination ${address.toString()} is a private address (${range}); network.private_destinations is deny and it is not in network.allow_ips`;
  }

  /** A request to portcullis' own listener would loop through it; refused whatever allow_ips says. */
  checkSelf(host: string, port: number | undefined): string | undefined {
    if (port === undefined || (this.self.port !== port && this.self.adminPort !== port)) return undefined;
    const isLocal = host === "localhost" || (ipaddr.isValid(host) && ["loopback", "unspecified"].includes(ipaddr.process(host).range()));
    if (!isLocal && host !== this.self.host) return undefined;
    return `destination ${host}:${port} is portcullis' own listener`;
  }

  private isAllowListed(address: Address): boolean {
    return this.allowed.some(([network, bits]) => address.kind() === network.kind() && address.match(network, bits));
  }
}
