import { Transform, type TransformCallback } from "node:stream";
import { ProxyError } from "../../core/errors.js";
import type { ChunkSigner } from "./sign.js";

/** The largest chunk held to sign it (SDKs send 64 KiB to 8 MiB; a chunk's signature precedes its data). */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
const MAX_LINE = 4096;
const MAX_TRAILER_LINES = 32;
const CHUNK_LINE = /^([0-9a-fA-F]{1,8});chunk-signature=[0-9a-fA-F]{64}$/;
const TRAILER_SIGNATURE = /^x-amz-trailer-signature:[0-9a-fA-F]{64}$/i;
const CRLF = Buffer.from("\r\n");

function malformed(why: string): ProxyError {
  return new ProxyError("bad_request", `aws-chunked upload body is malformed: ${why}`);
}

/**
 * Rewrites the chunk signatures of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD body (aws-chunked:
 * `HEXSIZE;chunk-signature=SIG\r\nDATA\r\n` ... `0;chunk-signature=SIG\r\n\r\n`) as it streams:
 * each chunk is held until its data is complete, then sent with the signature the real key
 * gives it, chained from the seed (the request's own signature). With `trailer` (the -TRAILER
 * variant) the final chunk is followed by trailing headers and `x-amz-trailer-signature:SIG`,
 * which is signed over them, chained from the final chunk's. A signature is always 64 hex
 * digits, so the body keeps its length and Content-Length stays true.
 */
type State =
  | { at: "size" }
  | { at: "data"; sizeText: string; size: number }
  /** Trailing header lines, after the final chunk of the trailer variant. */
  | { at: "trailers"; lines: string[] }
  /** The empty line that ends the body after the trailer signature. */
  | { at: "end" }
  | { at: "done" };

export class ChunkResigner extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private state: State = { at: "size" };

  constructor(
    private prior: string,
    private readonly signer: ChunkSigner,
    private readonly trailer = false,
  ) {
    super();
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.pending.push(data);
    this.pendingBytes += data.length;
    this.drain().then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    callback(this.state.at === "done" ? null : malformed("it ended before its final chunk"));
  }

  private takeBytes(bytes: number): Buffer {
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    const taken = all.subarray(0, bytes);
    const rest = all.subarray(bytes);
    this.pending = rest.length ? [rest] : [];
    this.pendingBytes = rest.length;
    return taken;
  }

  /** The next CRLF-terminated line, without its CRLF; undefined until it is complete. */
  private takeLine(): string | undefined {
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    this.pending = all.length ? [all] : [];
    const end = all.indexOf(CRLF);
    if (end < 0) {
      if (this.pendingBytes > MAX_LINE) throw malformed("a line is too long");
      return undefined;
    }
    return this.takeBytes(end + 2).subarray(0, end).toString("latin1");
  }

  /** Consumes what is pending, one step at a time, until a step needs more bytes. */
  private async drain(): Promise<void> {
    while (await this.step());
  }

  private async step(): Promise<boolean> {
    const state = this.state;
    switch (state.at) {
      case "size": {
        const line = this.takeLine();
        if (line === undefined) return false;
        const match = CHUNK_LINE.exec(line);
        if (!match) throw malformed(`expected "HEXSIZE;chunk-signature=SIGNATURE", got ${JSON.stringify(line.slice(0, 80))}`);
        const size = parseInt(match[1]!, 16);
        if (size > MAX_CHUNK_BYTES) throw malformed(`a chunk of ${size} bytes is over the ${MAX_CHUNK_BYTES}-byte limit`);
        this.state = { at: "data", sizeText: match[1]!, size };
        return true;
      }
      case "data": {
        const { sizeText, size } = state;
        if (size === 0 && this.trailer) {
          // The final chunk of the trailer variant: its trailing headers follow instead of a CRLF.
          this.prior = await this.signer.chunk(this.prior, Buffer.alloc(0));
          this.push(Buffer.from(`${sizeText};chunk-signature=${this.prior}\r\n`, "latin1"));
          this.state = { at: "trailers", lines: [] };
          return true;
        }
        // The data, then its CRLF (the final, empty chunk is followed by the CRLF that ends the body).
        if (this.pendingBytes < size + 2) return false;
        const framed = this.takeBytes(size + 2);
        if (framed[size] !== 0x0d || framed[size + 1] !== 0x0a) throw malformed("chunk data is not followed by CRLF");
        this.prior = await this.signer.chunk(this.prior, framed.subarray(0, size));
        this.push(Buffer.concat([Buffer.from(`${sizeText};chunk-signature=${this.prior}\r\n`, "latin1"), framed]));
        this.state = size === 0 ? { at: "done" } : { at: "size" };
        return true;
      }
      case "trailers": {
        const line = this.takeLine();
        if (line === undefined) return false;
        if (TRAILER_SIGNATURE.test(line)) {
          const canonical = state.lines.map((header) => {
            const at = header.indexOf(":");
            return `${header.slice(0, at).trim().toLowerCase()}:${header.slice(at + 1).trim()}\n`;
          });
          const signature = await this.signer.trailer(this.prior, canonical.join(""));
          const name = line.slice(0, line.indexOf(":"));
          this.push(Buffer.from(`${state.lines.map((header) => `${header}\r\n`).join("")}${name}:${signature}\r\n`, "latin1"));
          this.state = { at: "end" };
          return true;
        }
        if (line === "") throw malformed("the trailers carry no x-amz-trailer-signature");
        if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+:/.test(line)) throw malformed(`expected a trailing header, got ${JSON.stringify(line.slice(0, 80))}`);
        if (state.lines.length >= MAX_TRAILER_LINES) throw malformed("too many trailing headers");
        state.lines.push(line);
        return true;
      }
      case "end": {
        if (this.pendingBytes < 2) return false;
        const end = this.takeBytes(2);
        if (end[0] !== 0x0d || end[1] !== 0x0a) throw malformed("the trailers are not followed by an empty line");
        this.push(end);
        this.state = { at: "done" };
        return true;
      }
      case "done":
        if (this.pendingBytes) throw malformed("bytes follow its final chunk");
        return false;
    }
  }
}
