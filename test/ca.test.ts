import { execFile, execFileSync } from "node:child_process";
import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import type { Socket } from "node:net";
import { join } from "node:path";
import { createServer as createTlsServer, connect as tlsConnect } from "node:tls";
import forge from "node-forge";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CaExistsError, initCa, loadCa, type CertificateAuthority } from "../src/ca/authority.js";
import { forgeLeafCertificate } from "../src/ca/forge-leaf.js";
import { chainAfterLeaf, SecureContextStore } from "../src/ca/secure-contexts.js";
import { tempDir } from "./helpers/pki.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { openTlsTunnel } from "./helpers/tunnel.js";

const DAY = 24 * 3600 * 1000;
const execFileAsync = promisify(execFile);
let dir: string;
let ca: CertificateAuthority;
let proxy: TestProxy;

beforeAll(async () => {
  dir = tempDir("ca");
  await initCa(dir);
  ca = await loadCa(dir);
  proxy = await startProxy("version: 1\nnetwork: { default: allow, allow_ips: [127.0.0.1/32] }\n");
});

afterAll(async () => {
  await proxy?.close();
});

function openssl(args: string[], input?: string): string {
  return execFileSync("openssl", args, { input, encoding: "utf8" });
}

describe("init-ca", () => {
  it("writes ca.pem and a 0600 ca-key.pem, and refuses to overwrite without force", async () => {
    expect(statSync(join(dir, "ca-key.pem")).mode & 0o777).toBe(0o600);
    const before = readFileSync(join(dir, "ca.pem"), "utf8");
    await expect(initCa(dir)).rejects.toBeInstanceOf(CaExistsError);
    expect(readFileSync(join(dir, "ca.pem"), "utf8")).toBe(before);
    const forced = tempDir("ca-force");
    await initCa(forced);
    const first = readFileSync(join(forced, "ca.pem"), "utf8");
    await initCa(forced, { force: true });
    expect(readFileSync(join(forced, "ca.pem"), "utf8")).not.toBe(first);
  });

  it("is an RSA CA for ten years with CA:true pathlen:0, keyCertSign/cRLSign and a subject key identifier", () => {
    const text = openssl(["x509", "-noout", "-text", "-in", join(dir, "ca.pem")]);
    expect(text).toMatch(/Public Key Algorithm: rsaEncryption/);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(text).toMatch(/Subject Key Identifier:\s+([0-9A-F]{2}:){19}[0-9A-F]{2}/);
    const cert = new X509Certificate(readFileSync(join(dir, "ca.pem")));
    const years = (new Date(cert.validTo).getTime() - new Date(cert.validFrom).getTime()) / (365 * DAY);
    expect(years).toBeGreaterThan(9.9);
    expect(cert.ca).toBe(true);
  });
});

describe("forged leaf certificates", () => {
  it("carry SAN, serverAuth, the CA's key id as AKI, a positive serial, SHA-256 and a short backdated validity", async () => {
    const pem = await forgeLeafCertificate(ca, "api.example.com");
    const text = openssl(["x509", "-noout", "-text"], pem);
    expect(text).toMatch(/Subject: CN ?= ?api\.example\.com/);
    expect(text).toMatch(/Subject Alternative Name:\s+DNS:api\.example\.com/);
    expect(text).toMatch(/Extended Key Usage:\s+TLS Web Server Authentication/);
    expect(text).toMatch(/Signature Algorithm: sha256WithRSAEncryption/);
    expect(text).toMatch(/CA:FALSE/);
    const ski = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(openssl(["x509", "-noout", "-text", "-in", join(dir, "ca.pem")]))![1];
    const aki = /Authority Key Identifier:\s+(?:keyid:)?([0-9A-F:]+)/.exec(text)![1];
    expect(aki).toBe(ski);
    const cert = new X509Certificate(pem);
    expect(Number.parseInt(cert.serialNumber.slice(0, 2), 16)).toBeLessThan(0x80);
    const notBefore = new Date(cert.validFrom).getTime();
    const notAfter = new Date(cert.validTo).getTime();
    expect(Date.now() - notBefore).toBeGreaterThan(1.9 * DAY);
    expect(notAfter - notBefore).toBeLessThan(200 * DAY);
    expect(notAfter - Date.now()).toBeGreaterThan(90 * DAY);
  });

  it("use an IP SAN for IP literals (v4 and v6) and omit a CN of 64 characters or more", async () => {
    expect(openssl(["x509", "-noout", "-ext", "subjectAltName"], await forgeLeafCertificate(ca, "10.1.2.3"))).toContain("IP Address:10.1.2.3");
    expect(openssl(["x509", "-noout", "-ext", "subjectAltName"], await forgeLeafCertificate(ca, "[::1]"))).toContain("IP Address:0:0:0:0:0:0:0:1");
    const long = `${"a".repeat(60)}.example.com`;
    const text = openssl(["x509", "-noout", "-text"], await forgeLeafCertificate(ca, long));
    expect(text).not.toMatch(/Subject: CN/);
    expect(text).toContain(`DNS:${long}`);
  });

  it("verify with openssl against the CA (strict) and all share the one leaf key", async () => {
    const a = await forgeLeafCertificate(ca, "a.example");
    const b = await forgeLeafCertificate(ca, "b.example");
    const file = join(dir, "a.pem");
    writeFileSync(file, a);
    expect(openssl(["verify", "-x509_strict", "-CAfile", join(dir, "ca.pem"), file])).toContain(": OK");
    expect(new X509Certificate(a).publicKey.equals(new X509Certificate(b).publicKey)).toBe(true);
    expect(new X509Certificate(a).serialNumber).not.toBe(new X509Certificate(b).serialNumber);
  });

  it("carry an ECDSA P-256 key (cheap handshakes) with digitalSignature only, under the RSA CA", async () => {
    const leaf = new X509Certificate(await forgeLeafCertificate(ca, "ec.example"));
    expect(leaf.publicKey.asymmetricKeyType).toBe("ec");
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(leaf.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    const text = openssl(["x509", "-noout", "-text"], leaf.toString());
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
    expect(text).toContain("Signature Algorithm: sha256WithRSAEncryption");
  });

  it("keep using the RSA leaf key of a CA dir made by an older version", async () => {
    const old = tempDir("ca-rsa-leaf");
    await initCa(old);
    writeFileSync(join(old, "leaf-key.pem"), readFileSync(join(old, "ca-key.pem")), { mode: 0o600 });
    const oldCa = await loadCa(old);
    expect(oldCa.leafKey.type).toBe("rsa");
    const pem = await forgeLeafCertificate(oldCa, "rsa.example");
    writeFileSync(join(old, "rsa.pem"), pem);
    expect(openssl(["verify", "-x509_strict", "-CAfile", join(old, "ca.pem"), join(old, "rsa.pem")])).toContain(": OK");
    expect(new X509Certificate(pem).publicKey.asymmetricKeyType).toBe("rsa");
    expect(openssl(["x509", "-noout", "-text"], pem)).toMatch(/Digital Signature, Key Encipherment/);
  });

  it("are signed off the main thread: forging 20 hosts does not stall the event loop", async () => {
    const histogram = monitorEventLoopDelay({ resolution: 5 });
    histogram.enable();
    await Promise.all(Array.from({ length: 20 }, (_, i) => forgeLeafCertificate(ca, `stall-${i}.example`)));
    histogram.disable();
    // Pure-JS RSA signing costs ~30 ms a certificate on the main thread: 20 of them would stall for ~600 ms.
    expect(histogram.max / 1e6).toBeLessThan(150);
  });
});

describe("secure context cache", () => {
  it("forges once for 100 concurrent first CONNECTs to one new host", async () => {
    const before = proxy.proxy.certificateStats.forged;
    const sockets = await Promise.all(
      Array.from({ length: 100 }, () => openTlsTunnel(proxy.port, "concurrent.example:443", { servername: "concurrent.example", ca: proxy.caPem })),
    );
    expect(proxy.proxy.certificateStats.forged - before).toBe(1);
    const serials = new Set(sockets.map((s) => s.getPeerX509Certificate()!.serialNumber));
    expect(serials.size).toBe(1);
    for (const socket of sockets) socket.destroy();
  });

  it("reuses certificates forged in an earlier run from disk, and never one from another CA", async () => {
    const cacheDir = tempDir("disk-cache");
    await initCa(cacheDir);
    const first = new SecureContextStore(await loadCa(cacheDir));
    await first.get("disk.example");
    expect(first.stats.forged).toBe(1);
    // The write to disk is fire-and-forget; a second store created later must find it.
    await expect.poll(() => {
      try {
        return execFileSync("sh", ["-c", `ls ${join(cacheDir, "hosts")} | grep -c disk.example`], { encoding: "utf8" }).trim();
      } catch {
        return "0";
      }
    }).toBe("1");
    const second = new SecureContextStore(await loadCa(cacheDir));
    await second.get("disk.example");
    expect(second.stats).toMatchObject({ forged: 0, diskHits: 1 });

    await initCa(cacheDir, { force: true });
    const afterNewCa = new SecureContextStore(await loadCa(cacheDir));
    await afterNewCa.get("disk.example");
    expect(afterNewCa.stats).toMatchObject({ forged: 1, diskHits: 0 });
  });

  it("forges only for the CONNECT host, whatever SNI the client sends", async () => {
    const before = proxy.proxy.certificateStats.forged;
    const tls = await openTlsTunnel(proxy.port, "pinned.example:443", { ca: proxy.caPem, servername: "someone-else.example", checkServerIdentity: () => undefined });
    expect(tls.getPeerX509Certificate()!.checkHost("pinned.example")).toBe("pinned.example");
    tls.destroy();
    expect(proxy.proxy.certificateStats.forged - before).toBe(1);
  });

  it("leaves a self-signed CA out of the chain (every client holds it), and sends an intermediate CA or a cross-certificate", async () => {
    const caFile = join(dir, "proxy-ca.pem");
    writeFileSync(caFile, proxy.caPem);
    expect(await certificatesSent(["-proxy", `127.0.0.1:${proxy.port}`, "-connect", "alone.example:443", "-servername", "alone.example", "-CAfile", caFile])).toBe(1);

    // An operator's own root, and a portcullis CA beneath it: clients trust only the root.
    const root = caCertificate("operator root");
    const intermediate = caCertificate("portcullis intermediate", root);
    const interDir = tempDir("ca-intermediate");
    writeFileSync(join(interDir, "ca.pem"), intermediate.pem);
    writeFileSync(join(interDir, "ca-key.pem"), intermediate.keyPem, { mode: 0o600 });
    const interCa = await loadCa(interDir);
    expect(chainAfterLeaf(interCa.certPem).trim()).toBe(interCa.certPem.trim());
    expect(chainAfterLeaf(ca.certPem)).toBe("");
    // A self-signed CA followed by a cross-certificate of its key from the root: the cross-certificate is sent.
    const selfSigned = caCertificate("portcullis cross-signed");
    const cross = caCertificate("portcullis cross-signed", root, selfSigned.keyPem);
    expect(chainAfterLeaf(selfSigned.pem + cross.pem).trim()).toBe(cross.pem.trim());
    // A block that is no certificate would break every forged context: it is not sent.
    expect(chainAfterLeaf(`${selfSigned.pem}-----BEGIN CERTIFICATE-----\nnotbase64!!\n-----END CERTIFICATE-----\n${cross.pem}`).trim()).toBe(cross.pem.trim());
    const crossDir = tempDir("ca-cross");
    writeFileSync(join(crossDir, "ca.pem"), `${selfSigned.pem + cross.pem}-----BEGIN CERTIFICATE-----\nnotbase64!!\n-----END CERTIFICATE-----\n`);
    writeFileSync(join(crossDir, "ca-key.pem"), selfSigned.keyPem, { mode: 0o600 });
    for (const [store, name] of [
      [new SecureContextStore(interCa), "under-root.example"],
      [new SecureContextStore(await loadCa(crossDir)), "cross.example"],
    ] as const) {
      await expect(certificatesFromServer(store, name, root.pem, interDir)).resolves.toBe(2);
    }
  });

  it("serves the CONNECT host's certificate to a client that sends no SNI, and chains to the CA", async () => {
    const tls = await openTlsTunnel(proxy.port, "127.0.0.1:443", { ca: proxy.caPem, servername: "" as string, checkServerIdentity: () => undefined });
    const peer = tls.getPeerX509Certificate()!;
    expect(peer.checkIP("127.0.0.1")).toBe("127.0.0.1");
    const caCert = new X509Certificate(proxy.caPem);
    expect(peer.checkIssued(caCert)).toBe(true);
    expect(peer.verify(caCert.publicKey)).toBe(true);
    tls.destroy();
  });
});

/** Serves the store's certificate for `name`; how many certificates openssl saw, once it verified them against `rootPem` alone. */
async function certificatesFromServer(store: SecureContextStore, name: string, rootPem: string, dir: string): Promise<number> {
  const server = createTlsServer({ SNICallback: (servername, callback) => void store.get(servername).then((context) => callback(null, context), callback) });
  const sockets = new Set<Socket>();
  server.on("connection", (socket) => sockets.add(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const port = (server.address() as { port: number }).port;
    const client = tlsConnect({ host: "127.0.0.1", port, servername: name, ca: rootPem });
    await new Promise<void>((resolve, reject) => client.once("secureConnect", resolve).once("error", reject));
    expect(client.authorized).toBe(true);
    client.destroy();
    const rootFile = join(dir, "root.pem");
    writeFileSync(rootFile, rootPem);
    return await certificatesSent(["-connect", `127.0.0.1:${port}`, "-servername", name, "-CAfile", rootFile]);
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}

/** How many certificates the server sent, as openssl s_client shows them, once it verified the chain. */
async function certificatesSent(args: string[]): Promise<number> {
  const { stdout } = await execFileAsync("sh", ["-c", `echo | openssl s_client ${args.join(" ")} -showcerts -verify_return_error 2>&1`]);
  expect(stdout).toContain("Verify return code: 0 (ok)");
  return stdout.match(/BEGIN CERTIFICATE/g)?.length ?? 0;
}

/** A CA certificate and its key (a new one, or `ownKeyPem`), self-signed or signed by `issuer`, with no path length limit. */
function caCertificate(commonName: string, issuer?: { cert: forge.pki.Certificate; key: forge.pki.PrivateKey }, ownKeyPem?: string): { pem: string; keyPem: string; cert: forge.pki.Certificate; key: forge.pki.PrivateKey } {
  const keyPem = ownKeyPem ?? generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const key = forge.pki.privateKeyFromPem(keyPem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey((key as forge.pki.rsa.PrivateKey).n, (key as forge.pki.rsa.PrivateKey).e);
  cert.serialNumber = "01" + Math.floor(Math.random() * 1e12).toString(16);
  cert.validity.notBefore = new Date(Date.now() - DAY);
  cert.validity.notAfter = new Date(Date.now() + 365 * DAY);
  const subject = [{ name: "commonName", value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(issuer ? issuer.cert.subject.attributes : subject);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  cert.sign((issuer?.key ?? key) as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
  return { pem: forge.pki.certificateToPem(cert), keyPem, cert, key };
}
