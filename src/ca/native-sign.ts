import { sign, type KeyObject } from "node:crypto";
import forge from "node-forge";

// Present at runtime in node-forge, missing from its type definitions.
const { getTBSCertificate } = forge.pki as unknown as { getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1 };

const SHA256_WITH_RSA = forge.pki.oids.sha256WithRSAEncryption!;

/**
 * Signs a node-forge certificate with Node's native RSA instead of forge's pure-JS
 * implementation (~30 ms on the main thread per signature). node-forge builds the
 * TBSCertificate bytes; OpenSSL signs them on libuv's thread pool.
 */
export async function signCertificate(cert: forge.pki.Certificate, signerKey: KeyObject): Promise<void> {
  cert.siginfo.algorithmOid = SHA256_WITH_RSA;
  cert.signatureOid = SHA256_WITH_RSA;
  const tbs = forge.asn1.toDer(getTBSCertificate(cert)).getBytes();
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
