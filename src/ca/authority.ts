import { randomBytes } from "node:crypto";
import { access, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import forge from "node-forge";
import { generateEcKeyPem, generateRsaKeyPem, keyMaterialFromPem, readIfExists, rsaPublicKey, writePrivateFile, type KeyMaterial } from "./keys.js";
import { randomSerialHex, signCertificate } from "./native-sign.js";

export const CA_CERT_FILE = "ca.pem";
export const CA_KEY_FILE = "ca-key.pem";
export const LEAF_KEY_FILE = "leaf-key.pem";

const CA_VALIDITY_YEARS = 10;

export interface CertificateAuthority {
  dir: string;
  certPem: string;
  cert: forge.pki.Certificate;
  key: KeyMaterial;
  /** Subject key identifier of the CA, as a forge binary string; every leaf's authority key identifier. */
  subjectKeyId: string;
  /** The one key pair every forged certificate carries. */
  leafKey: KeyMaterial;
}

export class CaExistsError extends Error {}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

export async function caExists(dir: string): Promise<boolean> {
  return (await exists(join(dir, CA_CERT_FILE))) && (await exists(join(dir, CA_KEY_FILE)));
}

/** Creates ca.pem and ca-key.pem; refuses to overwrite unless forced. */
export async function initCa(dir: string, options: { force?: boolean; commonName?: string } = {}): Promise<void> {
  await mkdir(dir, { recursive: true });
  const certPath = join(dir, CA_CERT_FILE);
  const keyPath = join(dir, CA_KEY_FILE);
  if (!options.force && ((await exists(certPath)) || (await exists(keyPath)))) {
    throw new CaExistsError(`a CA already exists in ${dir} (${CA_CERT_FILE}/${CA_KEY_FILE}); pass --force to replace it`);
  }
  const key = keyMaterialFromPem(await generateRsaKeyPem());
  const cert = forge.pki.createCertificate();
  cert.publicKey = rsaPublicKey(key);
  cert.serialNumber = randomSerialHex(randomBytes);
  const now = new Date();
  cert.validity.notBefore = new Date(now.getTime() - 24 * 3600 * 1000);
  cert.validity.notAfter = new Date(now.getTime());
  cert.validity.notAfter.setFullYear(now.getFullYear() + CA_VALIDITY_YEARS);
  const subject = [
    { name: "commonName", value: options.commonName ?? `portcullis CA ${now.toISOString().slice(0, 10)}` },
    { name: "organizationName", value: "portcullis" },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, pathLenConstraint: 0, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  await signCertificate(cert, key.keyObject);
  await writePrivateFile(keyPath, key.pem);
  await writeFile(certPath, forge.pki.certificateToPem(cert), { mode: 0o644 });
}

/** Loads the CA from dir, creating the shared leaf key on first use. */
export async function loadCa(dir: string): Promise<CertificateAuthority> {
  const certPem = await readIfExists(join(dir, CA_CERT_FILE));
  const keyPem = await readIfExists(join(dir, CA_KEY_FILE));
  if (!certPem || !keyPem) throw new Error(`no CA in ${dir}: run "portcullis init-ca --dir ${dir}"`);
  const cert = forge.pki.certificateFromPem(certPem);
  const key = keyMaterialFromPem(keyPem);
  const ski = cert.getExtension("subjectKeyIdentifier") as { subjectKeyIdentifier?: string } | undefined;
  const subjectKeyId = ski?.subjectKeyIdentifier
    ? forge.util.hexToBytes(ski.subjectKeyIdentifier)
    : cert.generateSubjectKeyIdentifier().getBytes();
  return { dir, certPem, cert, key, subjectKeyId, leafKey: await loadOrCreateLeafKey(dir) };
}

async function loadOrCreateLeafKey(dir: string): Promise<KeyMaterial> {
  const path = join(dir, LEAF_KEY_FILE);
  let pem = await readIfExists(path);
  if (!pem) {
    // A CA dir made by an older version keeps its RSA leaf key; new ones get ECDSA P-256.
    pem = await generateEcKeyPem();
    await writePrivateFile(path, pem);
  }
  return keyMaterialFromPem(pem);
}
