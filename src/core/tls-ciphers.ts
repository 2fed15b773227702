import tls from "node:tls";

/**
 * TLS 1.3 suites, most preferred first: the order of Go's crypto/tls, BoringSSL and Mozilla's
 * guidelines. OpenSSL's own default puts AES-256-GCM-SHA384 first; AES-128-GCM is as safe for
 * this use (RFC 8446's mandatory suite), runs 10 AES rounds to 14 on every byte relayed, and
 * its handshake hashes with SHA-256, which current x86 and ARM CPUs do in hardware and SHA-384
 * they do not.
 */
const TLS13_PREFERENCE = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];

/**
 * Node's cipher list (`--tls-cipher-list`, or `tls.DEFAULT_CIPHERS` as a program embedding
 * portcullis set it: read on every call, as Node does) with its TLS 1.3 suites in
 * TLS13_PREFERENCE's order: the same suites, so nothing is enabled that Node's list leaves out.
 */
export function preferredCiphers(defaults = tls.DEFAULT_CIPHERS): string {
  const entries = defaults.split(":");
  const rank = (suite: string) => {
    const index = TLS13_PREFERENCE.indexOf(suite);
    return index === -1 ? TLS13_PREFERENCE.length : index;
  };
  const tls13 = entries.filter((entry) => entry.startsWith("TLS_")).sort((a, b) => rank(a) - rank(b));
  return [...tls13, ...entries.filter((entry) => !entry.startsWith("TLS_"))].join(":");
}
