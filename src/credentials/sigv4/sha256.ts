import { Hash } from "@smithy/hash-node";
import { webcrypto } from "node:crypto";

type SourceData = string | ArrayBuffer | ArrayBufferView;

/** Bodies at least this large are hashed on the thread pool: SHA-256 of 10 MiB is tens of milliseconds of event loop. */
export const POOLED_HASH_BYTES = 64 * 1024;

function bytes(data: SourceData): Uint8Array {
  if (typeof data === "string") return Buffer.from(data, "utf8");
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * The signer's SHA-256 (smithy's Checksum shape). HMACs (with a secret: the signing key chain,
 * a few dozen bytes each) and small payloads are hashed at once, as @smithy/hash-node does; a
 * payload of POOLED_HASH_BYTES or more (a body read to compute its hash) goes to WebCrypto,
 * which hashes on libuv's thread pool and leaves the event loop to every other request.
 */
export class Sha256 {
  private readonly hmac: Hash | undefined;
  private chunks: Uint8Array[] = [];
  private size = 0;

  constructor(secret?: SourceData) {
    this.hmac = secret === undefined ? undefined : new Hash("sha256", secret);
  }

  update(data: SourceData): void {
    if (this.hmac) return this.hmac.update(data);
    const chunk = bytes(data);
    this.chunks.push(chunk);
    this.size += chunk.byteLength;
  }

  async digest(): Promise<Uint8Array> {
    if (this.hmac) return this.hmac.digest();
    const whole = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    if (this.size >= POOLED_HASH_BYTES) return new Uint8Array(await webcrypto.subtle.digest("SHA-256", whole));
    const hash = new Hash("sha256");
    hash.update(whole);
    return hash.digest();
  }

  reset(): void {
    this.hmac?.reset();
    this.chunks = [];
    this.size = 0;
  }
}
