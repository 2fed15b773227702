import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSecureContext, type SecureContext } from "node:tls";
import { initCa, loadCa } from "../../src/ca/authority.js";
import { forgeLeafCertificate } from "../../src/ca/forge-leaf.js";

export interface ServerPki {
  dir: string;
  caFile: string;
  caPem: string;
  key: string;
  /** Certificate for 127.0.0.1 (served without SNI). */
  ipCert: string;
  /** SNI contexts for localhost and any other name. */
  sniCallback: (servername: string, callback: (error: Error | null, context?: SecureContext) => void) => void;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `pcx-${prefix}-`));
}

/** A CA of the upstream's own (not portcullis') and certificates for localhost and 127.0.0.1 signed by it. */
export async function makeUpstreamPki(name = "upstream"): Promise<ServerPki> {
  const dir = tempDir(name);
  await initCa(dir, { commonName: `${name} test CA` });
  const ca = await loadCa(dir);
  const localhostCert = await forgeLeafCertificate(ca, "localhost");
  const ipCert = await forgeLeafCertificate(ca, "127.0.0.1");
  const contexts = new Map<string, Promise<SecureContext>>([["localhost", Promise.resolve(createSecureContext({ key: ca.leafKey.pem, cert: localhostCert }))]]);
  return {
    dir,
    caFile: join(dir, "ca.pem"),
    caPem: ca.certPem,
    key: ca.leafKey.pem,
    ipCert,
    // Any name the test maps to 127.0.0.1 gets a certificate from the upstream's CA.
    sniCallback: (servername, callback) => {
      let context = contexts.get(servername);
      if (!context) {
        context = forgeLeafCertificate(ca, servername).then((cert) => createSecureContext({ key: ca.leafKey.pem, cert }));
        contexts.set(servername, context);
      }
      context.then((ready) => callback(null, ready), (error: Error) => callback(error));
    },
  };
}
