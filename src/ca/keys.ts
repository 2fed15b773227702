import { createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from "node:crypto";
import { chmod, readFile, writeFile, rename } from "node:fs/promises";
import forge from "node-forge";

/** RSA-2048 generated natively on the thread pool (forge's pure-JS keygen blocks for seconds). */
export async function generateRsaKeyPem(): Promise<string> {
  return new Promise((resolve, reject) =>
    generateKeyPair(
      "rsa",
      { modulusLength: 2048, publicExponent: 0x10001, privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } },
      (error, _publicKey, privateKey) => (error ? reject(error) : resolve(privateKey)),
    ),
  );
}

/**
 * ECDSA P-256, for the shared leaf key: a TLS server signs every full handshake with it, and a
 * P-256 signature costs about 1/25 of an RSA-2048 one (openssl speed here: 29,000 against 1,200
 * signatures/s). Every client portcullis serves accepts it; the CA itself stays RSA.
 */
export async function generateEcKeyPem(): Promise<string> {
  return new Promise((resolve, reject) =>
    generateKeyPair(
      "ec",
      { namedCurve: "prime256v1", privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } },
      (error, _publicKey, privateKey) => (error ? reject(error) : resolve(privateKey)),
    ),
  );
}

export interface KeyMaterial {
  pem: string;
  keyObject: KeyObject;
  /** "rsa" or "ec" */
  type: string;
  /** The public key as a certificate's SubjectPublicKeyInfo, whatever the algorithm (forge itself models only RSA keys). */
  subjectPublicKeyInfo: forge.asn1.Asn1;
  /** Present for RSA keys only. */
  forgePublicKey?: forge.pki.rsa.PublicKey;
}

export function keyMaterialFromPem(pem: string): KeyMaterial {
  const keyObject = createPrivateKey(pem);
  const publicKey = createPublicKey(keyObject);
  const spkiDer = publicKey.export({ type: "spki", format: "der" });
  const type = keyObject.asymmetricKeyType ?? "unknown";
  if (type !== "rsa" && type !== "ec") throw new Error(`unsupported key type ${type}: expected RSA or ECDSA`);
  return {
    pem,
    keyObject,
    type,
    subjectPublicKeyInfo: forge.asn1.fromDer(spkiDer.toString("binary")),
    forgePublicKey: type === "rsa" ? (forge.pki.publicKeyFromPem(publicKey.export({ type: "spki", format: "pem" }).toString()) as forge.pki.rsa.PublicKey) : undefined,
  };
}

/** The CA's own key: certificates are signed with RSA (SHA-256). */
export function rsaPublicKey(material: KeyMaterial): forge.pki.rsa.PublicKey {
  if (!material.forgePublicKey) throw new Error(`the CA key must be RSA, not ${material.type}`);
  return material.forgePublicKey;
}

/** Writes a secret file atomically with mode 0600 from the first byte on. */
export async function writePrivateFile(path: string, content: string): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, content, { mode: 0o600 });
  await chmod(temporary, 0o600);
  await rename(temporary, path);
}

export async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}
