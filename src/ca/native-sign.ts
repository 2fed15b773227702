import { sign, type KeyObject } from "node:crypto";
import forge from "node-forge";

// Present at runtime in node-forge, missing from its type definitions.
const { getTBSCertificate } = forge.pki as unknown as { getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1 };

const SHA256_WITH_RSA = forge.pki.oids.sha256WithRSAEncryption!;
/** TBSCertificate: [0] version, serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, … (RFC 5280 4.1). */
const SUBJECT_PUBLIC_KEY_INFO = 6;

/**
 * Signs a node-forge certificate with Node's native RSA instead of forge's pure-JS
 * implementation (~30 ms on the main thread per signature). node-forge builds the
 * TBSCertificate bytes; OpenSSL signs them on libuv's thread pool.
 */
export async function signCertificate(cert: forge.pki.Certificate, signerKey: KeyObject, subjectPublicKeyInfo?: forge.asn1.Asn1): Promise<void> {
  cert.siginfo.algorithmOid = SHA256_WITH_RSA;
  cert.signatureOid = SHA256_WITH_RSA;
  const tbsAsn1 = getTBSCertificate(cert);
  if (subjectPublicKeyInfo) {
    // forge only writes RSA keys: the subject's key (an ECDSA one) goes in as encoded by OpenSSL,
    // and the certificate's PEM is made from this TBS (forge reuses cert.tbsCertificate).
    const fields = tbsAsn1.value as forge.asn1.Asn1[];
    fields[SUBJECT_PUBLIC_KEY_INFO] = subjectPublicKeyInfo;
    (cert as forge.pki.Certificate & { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = tbsAsn1;
  }
  const tbs = forge.asn1.toDer(tbsAsn1).getBytes();
  const signature = await new Promise<Buffer>((resolve, reject) =>
    sign("sha256", Buffer.from(tbs, "binary"), signerKey, (error, result) => (error ? reject(error) : resolve(result))),
  );
  cert.signature = signature.toString("binary");
}

/** A positive, minimally encoded DER INTEGER: top bit clear (Go rejects negative serials), first byte non-zero. */
export function randomSerialHex(randomBytes: (size: number) => Buffer): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString("hex");
}
