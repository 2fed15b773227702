import { Transform, type TransformCallback } from "node:stream";
import { ProxyError } from "../../core/errors.js";

/** The largest chunk held to sign it (SDKs send 64 KiB to 8 MiB; a chunk's signature precedes its data). */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
const MAX_CHUNK_LINE = 4096;
const CHUNK_LINE = /^([0-9a-fA-F]{1,8});chunk-signature=[0-9a-fA-F]{64}$/;
const CRLF = Buffer.from("\r\n");

function malformed(why: string): ProxyError {
  return new ProxyError("bad_request", `aws-chunked upload body is malformed: ${why}`);
}

/**
 * Rewrites the chunk signatures of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD body (aws-chunked:
 * `HEXSIZE;chunk-signature=SIG\r\nDATA\r\n` ... `0;chunk-signature=SIG\r\n\r\n`) as it streams:
 * each chunk is held until its data is complete, then sent with the signature the real key
 * gives it, chained from the seed (the request's own signature). A signature is always 64 hex
 * digits, so the body keeps its length and Content-Length stays true.
 */
export class ChunkResigner extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** The size line of the chunk being read, once it arrived. */
  private chunk: { sizeText: string; size: number } | undefined;
  private done = false;

  constructor(
    private prior: string,
    private readonly sign: (prior: string, data: Buffer) => Promise<string>,
  ) {
    super();
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.pending.push(data);
    this.pendingBytes += data.length;
    this.drain().then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    callback(this.done ? null : malformed("it ended before its final chunk"));
  }

  private takeBytes(bytes: number): Buffer {
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    const taken = all.subarray(0, bytes);
    const rest = all.subarray(bytes);
    this.pending = rest.length ? [rest] : [];
    this.pendingBytes = rest.length;
    return taken;
  }

  /** Index of the first CRLF in what is pending, or -1. */
  private lineEnd(): number {
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    this.pending = all.length ? [all] : [];
    return all.indexOf(CRLF);
  }

  private async drain(): Promise<void> {
    for (;;) {
      if (this.done) {
        if (this.pendingBytes) throw malformed("bytes follow its final chunk");
        return;
      }
      if (!this.chunk) {
        const end = this.lineEnd();
        if (end < 0) {
          if (this.pendingBytes > MAX_CHUNK_LINE) throw malformed("a chunk header line is too long");
          return;
        }
        const line = this.takeBytes(end + 2).subarray(0, end).toString("latin1");
        const match = CHUNK_LINE.exec(line);
        if (!match) throw malformed(`expected "HEXSIZE;chunk-signature=SIGNATURE", got ${JSON.stringify(line.slice(0, 80))}`);
        const size = parseInt(match[1]!, 16);
        if (size > MAX_CHUNK_BYTES) throw malformed(`a chunk of ${size} bytes is over the ${MAX_CHUNK_BYTES}-byte limit`);
        this.chunk = { sizeText: match[1]!, size };
      }
      const { sizeText, size } = this.chunk;
      // The data, then its CRLF (the final, empty chunk is followed by the CRLF that ends the body).
      if (this.pendingBytes < size + 2) return;
      const framed = this.takeBytes(size + 2);
      if (framed[size] !== 0x0d || framed[size + 1] !== 0x0a) throw malformed("chunk data is not followed by CRLF");
      const data = framed.subarray(0, size);
      const signature = await this.sign(this.prior, data);
      this.prior = signature;
      this.push(Buffer.concat([Buffer.from(`${sizeText};chunk-signature=${signature}\r\n`, "latin1"), framed]));
      this.chunk = undefined;
      if (size === 0) this.done = true;
    }
  }
}
