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

export interface KeyMaterial {
  pem: string;
  keyObject: KeyObject;
  forgePublicKey: forge.pki.rsa.PublicKey;
}

export function keyMaterialFromPem(pem: string): KeyMaterial {
  const keyObject = createPrivateKey(pem);
  const publicPem = createPublicKey(keyObject).export({ type: "spki", format: "pem" }).toString();
  return { pem, keyObject, forgePublicKey: forge.pki.publicKeyFromPem(publicPem) as forge.pki.rsa.PublicKey };
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
