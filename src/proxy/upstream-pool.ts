import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { readFileSync, existsSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { isIP } from "node:net";
import { createSecureContext, rootCertificates, type SecureContext } from "node:tls";

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

/** Name resolution with the policy's static overrides in front of the system resolver. */
export function createLookup(resolve: Record<string, string>): LookupFunction {
  const overrides = new Map(Object.entries(resolve).map(([name, address]) => [name.toLowerCase().replace(/\.$/, ""), address]));
  return (hostname, options, callback) => {
    const address = overrides.get(hostname.toLowerCase().replace(/\.$/, ""));
    if (address === undefined) {
      dnsLookup(hostname, options, (error, address, family) => callback(error, address, family));
      return;
    }
    const family = isIP(address);
    if (options.all) callback(null, [{ address, family }]);
    else callback(null, address, family);
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
