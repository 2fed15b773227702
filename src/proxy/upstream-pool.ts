import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { readFileSync, existsSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { isIP } from "node:net";
import { createSecureContext, rootCertificates, type SecureContext } from "node:tls";
import { DestinationDenied, type DestinationGuard } from "../policy/destinations.js";
import { normaliseHost } from "../policy/hosts.js";

/** Debian/Ubuntu, Fedora/RHEL, Alpine and macOS (Homebrew OpenSSL) locations of the system trust bundle. */
const SYSTEM_BUNDLES = [
  "/etc/ssl/certs/ca-certificates.crt",
  "/etc/pki/tls/certs/ca-bundle.crt",
  "/etc/ssl/cert.pem",
];

export interface UpstreamSettings {
  /** Extra PEM files trusted for upstream TLS. */
  trustFiles: string[];
  /** Static name overrides: host -> IP. */
  resolve: Record<string, string>;
}

export type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
export type LookupFunction = (hostname: string, options: LookupOptions, callback: LookupCallback) => void;

/** System roots, Node's bundled roots, NODE_EXTRA_CA_CERTS and the policy's upstream.trust files. */
export function buildUpstreamTrust(trustFiles: string[]): SecureContext {
  const ca = [...rootCertificates];
  const system = SYSTEM_BUNDLES.find((file) => existsSync(file));
  if (system) ca.push(readFileSync(system, "utf8"));
  const extra = process.env.NODE_EXTRA_CA_CERTS;
  if (extra && existsSync(extra)) ca.push(readFileSync(extra, "utf8"));
  for (const file of trustFiles) ca.push(readFileSync(file, "utf8"));
  return createSecureContext({ ca, minVersion: "TLSv1.2" });
}

/**
 * Name resolution as portcullis dials: the policy's static overrides in front of the system
 * resolver, then every resolved address checked by the destination guard. The socket
 * connects to exactly the addresses checked here: there is no second lookup a DNS
 * rebinding could slip between.
 */
export function createLookup(resolve: Record<string, string>, guard: DestinationGuard): LookupFunction {
  const overrides = new Map(Object.entries(resolve).map(([name, address]) => [normaliseHost(name), address]));
  return (hostname, options, callback) => {
    const answer = (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => {
      if (error) return callback(error, options.all ? [] : "", 0);
      for (const { address } of addresses) {
        const why = guard.check(address);
        if (why) return callback(new DestinationDenied(`${hostname} resolves to ${address}: ${why}`), options.all ? [] : "", 0);
      }
      if (options.all) callback(null, addresses);
      else callback(null, addresses[0]!.address, addresses[0]!.family);
    };
    const override = overrides.get(normaliseHost(hostname));
    if (override !== undefined) {
      answer(null, [{ address: override, family: isIP(override) }]);
      return;
    }
    // Every address is resolved and checked, even when the caller wants one: a name must not
    // pass with one public address while also pointing somewhere private.
    dnsLookup(hostname, { ...options, all: true }, (error, addresses) => answer(error, addresses));
  };
}

/**
 * Keep-alive connection pools shared by every tunnel: one per scheme, keyed by Node per
 * host:port. Free sockets close after IDLE_MS.
 */
export class UpstreamPool {
  static readonly IDLE_MS = 30_000;
  readonly http: http.Agent;
  readonly https: https.Agent;

  constructor(
    readonly lookup: LookupFunction,
    readonly trust: SecureContext,
  ) {
    const common = {
      keepAlive: true,
      maxSockets: 256,
      maxFreeSockets: 64,
      timeout: UpstreamPool.IDLE_MS,
      scheduling: "lifo" as const,
      lookup,
      noDelay: true,
    };
    this.http = new http.Agent(common);
    this.https = new https.Agent({ ...common, secureContext: trust, minVersion: "TLSv1.2", ALPNProtocols: ["http/1.1"] });
  }

  agentFor(scheme: "http" | "https"): http.Agent {
    return scheme === "https" ? this.https : this.http;
  }

  destroy(): void {
    this.http.destroy();
    this.https.destroy();
  }
}
