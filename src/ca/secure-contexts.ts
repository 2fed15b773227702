import { constants, createHash, createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { createSecureContext, type SecureContext } from "node:tls";
import { LRUCache } from "lru-cache";
import { preferredCiphers } from "../core/tls-ciphers.js";
import type { CertificateAuthority } from "./authority.js";
import { normaliseHost } from "../policy/hosts.js";
import { forgeLeafCertificate } from "./forge-leaf.js";

/** A cached certificate is re-forged when it has less than this left. */
const RENEW_BEFORE_MS = 7 * 24 * 3600 * 1000;

export interface SecureContextStats {
  hits: number;
  misses: number;
  forged: number;
  diskHits: number;
}

/**
 * The certificates sent after the leaf: those of the CA file that are not self-signed. A
 * self-signed CA is the trust anchor every client already holds, and RFC 8446 (4.4.2) lets it be
 * left out: sending it cost each client about 1 KB and 0.2 ms a full handshake here. A CA that is
 * an intermediate under an operator's own root, or a cross-certificate the file holds after a
 * self-signed CA, is sent, or clients that trust only that root cannot build the chain.
 */
export function chainAfterLeaf(certPem: string): string {
  const blocks = certPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  // A block that is not a certificate is left out too: in the chain it would make every
  // forged context fail to build, and so every interception.
  const sent = blocks.filter((block) => {
    try {
      const cert = new X509Certificate(block);
      return !(cert.checkIssued(cert) && cert.verify(cert.publicKey));
    } catch {
      return false;
    }
  });
  return sent.map((block) => `${block}\n`).join("");
}

/**
 * Hands out a TLS server context per host: memory LRU first, then the on-disk cache of
 * certificates forged in earlier runs, then a fresh forgery. Concurrent first requests for
 * one host share a single forgery.
 */
export class SecureContextStore {
  readonly stats: SecureContextStats = { hits: 0, misses: 0, forged: 0, diskHits: 0 };
  private readonly contexts: LRUCache<string, SecureContext>;
  private readonly inFlight = new Map<string, Promise<SecureContext>>();
  private readonly hostsDir: string;
  private readonly caX509: X509Certificate;
  private readonly leafPublicKey: KeyObject;
  /** What follows the leaf in the chain sent to clients: see chainAfterLeaf. */
  private readonly chainTail: string;

  constructor(
    private readonly ca: CertificateAuthority,
    options: { maxEntries?: number } = {},
  ) {
    this.contexts = new LRUCache({ max: options.maxEntries ?? 1000 });
    this.hostsDir = join(ca.dir, "hosts");
    this.caX509 = new X509Certificate(ca.certPem);
    this.leafPublicKey = createPublicKey(ca.leafKey.keyObject);
    this.chainTail = chainAfterLeaf(ca.certPem);
  }

  get caCertPem(): string {
    return this.ca.certPem;
  }

  async get(host: string): Promise<SecureContext> {
    const name = normaliseHost(host);
    const cached = this.contexts.get(name);
    if (cached) {
      this.stats.hits++;
      return cached;
    }
    this.stats.misses++;
    let pending = this.inFlight.get(name);
    if (!pending) {
      pending = this.create(name).finally(() => this.inFlight.delete(name));
      this.inFlight.set(name, pending);
    }
    return pending;
  }

  private async create(name: string): Promise<SecureContext> {
    const leafPem = (await this.readFromDisk(name)) ?? (await this.forgeAndStore(name));
    const context = createSecureContext({
      key: this.ca.leafKey.pem,
      cert: leafPem + this.chainTail,
      minVersion: "TLSv1.2",
      // portcullis' order, not the client's (most put AES-256 first), except that a client
      // that lists ChaCha20 first (no AES hardware) gets it.
      ciphers: preferredCiphers(),
      honorCipherOrder: true,
      secureOptions: constants.SSL_OP_PRIORITIZE_CHACHA,
    });
    this.contexts.set(name, context);
    return context;
  }

  private fileFor(name: string): string {
    const readable = name.replace(/[^a-z0-9.-]/g, "_").slice(0, 100);
    const digest = createHash("sha256").update(name).digest("hex").slice(0, 12);
    return join(this.hostsDir, `${readable}-${digest}.pem`);
  }

  private async readFromDisk(name: string): Promise<string | undefined> {
    let pem: string;
    try {
      pem = await readFile(this.fileFor(name), "utf8");
    } catch {
      return undefined;
    }
    return this.isReusable(pem, name) ? (this.stats.diskHits++, pem) : undefined;
  }

  /** Only a certificate for this exact host, signed by the current CA with the current leaf key, not near expiry. */
  private isReusable(pem: string, name: string): boolean {
    try {
      const cert = new X509Certificate(pem);
      const matchesName = isIP(name) ? cert.checkIP(name) !== undefined : cert.checkHost(name, { wildcards: false }) !== undefined;
      return (
        matchesName &&
        cert.checkIssued(this.caX509) &&
        cert.verify(this.caX509.publicKey) &&
        cert.publicKey.equals(this.leafPublicKey) &&
        new Date(cert.validTo).getTime() - Date.now() > RENEW_BEFORE_MS &&
        new Date(cert.validFrom).getTime() <= Date.now()
      );
    } catch {
      return false;
    }
  }

  private async forgeAndStore(name: string): Promise<string> {
    const pem = await forgeLeafCertificate(this.ca, name);
    this.stats.forged++;
    // The disk cache is an optimisation: a failed write must not fail the handshake.
    void this.writeToDisk(name, pem).catch(() => undefined);
    return pem;
  }

  private async writeToDisk(name: string, pem: string): Promise<void> {
    await mkdir(this.hostsDir, { recursive: true });
    const file = this.fileFor(name);
    const temporary = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await writeFile(temporary, pem);
    await rename(temporary, file);
  }
}
