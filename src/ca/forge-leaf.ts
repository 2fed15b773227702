import { randomBytes } from "node:crypto";
import { isIP } from "node:net";
import forge from "node-forge";
import { normaliseHost } from "../policy/hosts.js";
import type { CertificateAuthority } from "./authority.js";
import { rsaPublicKey } from "./keys.js";
import { randomSerialHex, signCertificate } from "./native-sign.js";

const DAY_MS = 24 * 3600 * 1000;
/** Backdated for clients with skewed clocks. */
export const LEAF_BACKDATE_MS = 2 * DAY_MS;
/** Total validity stays under 200 days: Apple platforms reject longer server certificates. */
export const LEAF_LIFETIME_MS = 180 * DAY_MS;
const COMMON_NAME_MAX = 64;


/** Forges a serverAuth leaf for host, signed natively by the CA; returns the certificate PEM. */
export async function forgeLeafCertificate(ca: CertificateAuthority, host: string, now = Date.now()): Promise<string> {
  const name = normaliseHost(host);
  const cert = forge.pki.createCertificate();
  // forge needs an RSA key to build the TBS; an ECDSA leaf key replaces it as it is signed.
  cert.publicKey = ca.leafKey.forgePublicKey ?? rsaPublicKey(ca.key);
  cert.serialNumber = randomSerialHex(randomBytes);
  cert.validity.notBefore = new Date(now - LEAF_BACKDATE_MS);
  cert.validity.notAfter = new Date(now + LEAF_LIFETIME_MS);
  cert.setSubject(name.length < COMMON_NAME_MAX ? [{ name: "commonName", value: name }] : []);
  cert.setIssuer(ca.cert.subject.attributes);
  const altName = isIP(name) ? { type: 7, ip: name } : { type: 2, value: name };
  cert.setExtensions([
    { name: "basicConstraints", cA: false, critical: true },
    // keyEncipherment is for RSA key transport only (RFC 5480 3 for ECDSA keys).
    { name: "keyUsage", digitalSignature: true, keyEncipherment: ca.leafKey.type === "rsa", critical: true },
    { name: "extKeyUsage", serverAuth: true },
    // A subject with no CN must be accompanied by a critical SAN (RFC 5280 4.2.1.6).
    { name: "subjectAltName", altNames: [altName], critical: name.length >= COMMON_NAME_MAX },
    { name: "authorityKeyIdentifier", keyIdentifier: ca.subjectKeyId },
  ]);
  await signCertificate(cert, ca.key.keyObject, ca.leafKey.type === "rsa" ? undefined : ca.leafKey.subjectPublicKeyInfo);
  return forge.pki.certificateToPem(cert);
}
