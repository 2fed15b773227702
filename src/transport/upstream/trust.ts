import { existsSync, readFileSync } from "node:fs";
import { createSecureContext, rootCertificates, type SecureContext } from "node:tls";
import { preferredCiphers } from "../../core/tls-ciphers.js";

/** Debian/Ubuntu, Fedora/RHEL, Alpine and macOS (Homebrew OpenSSL) locations of the system trust bundle. */
const SYSTEM_BUNDLES = [
  "/etc/ssl/certs/ca-certificates.crt",
  "/etc/pki/tls/certs/ca-bundle.crt",
  "/etc/ssl/cert.pem",
];

/** System roots, Node's bundled roots, NODE_EXTRA_CA_CERTS and the policy's upstream.trust files. */
export function buildUpstreamTrust(trustFiles: string[]): SecureContext {
  const ca = [...rootCertificates];
  const system = SYSTEM_BUNDLES.find((file) => existsSync(file));
  if (system) ca.push(readFileSync(system, "utf8"));
  const extra = process.env.NODE_EXTRA_CA_CERTS;
  if (extra && existsSync(extra)) ca.push(readFileSync(extra, "utf8"));
  for (const file of trustFiles) ca.push(readFileSync(file, "utf8"));
  // Offered in portcullis' order; most servers pick by the client's.
  return createSecureContext({ ca, minVersion: "TLSv1.2", ciphers: preferredCiphers() });
}

