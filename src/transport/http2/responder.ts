import { constants, type ServerHttp2Stream } from "node:http2";
import type { Duplex } from "node:stream";
import type { RawHeaders } from "../../core/headers.js";
import type { Responder } from "../../core/messages.js";
import { toHttp2Headers } from "./headers.js";
import { resetStream } from "./reset.js";

/** How much a stream may buffer towards a client before its source is paused (as the HTTP/1.1 tunnels' 256 KiB). */
const WRITE_BUFFER_BYTES = 256 * 1024;

/** Sec-WebSocket-Accept belongs to the HTTP/1.1 handshake; RFC 8441 answers 200 without it. */
const NOT_IN_EXTENDED_CONNECT = new Set(["sec-websocket-accept"]);

/**
 * The pipeline's responder over one h2 stream. Trailers may follow any body (gRPC's status
 * arrives that way), so the stream always waits for them; none is an empty END_STREAM.
 */
export class Http2Responder implements Responder {
  readonly httpVersion = "2" as const;
  statusSent: number | undefined;
  private trailers: RawHeaders = [];
  private ended = false;
  private readonly bodiless: boolean;

  constructor(
    private readonly stream: ServerHttp2Stream,
    method: string,
  ) {
    this.bodiless = method === "HEAD";
    stream.on("wantTrailers", () => {
      try {
        stream.sendTrailers(toHttp2Headers(this.trailers, {}));
      } catch {
        resetStream(stream, constants.NGHTTP2_INTERNAL_ERROR);
      }
    });
  }

  get headersSent(): boolean {
    return this.stream.headersSent;
  }

  get destroyed(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }

  get finished(): boolean {
    return this.ended && this.stream.writableFinished;
  }

  writeContinue(): void {
    if (this.stream.headersSent || this.destroyed) return;
    try {
      this.stream.additionalHeaders({ ":status": 100 });
    } catch {
      // An interim answer that cannot go out changes nothing: the final one still will.
    }
  }

  writeHead(status: number, _reason: string | undefined, headers: RawHeaders, alone = false): void {
    this.statusSent = status;
    const noBody = alone || this.bodiless || status === 204 || status === 304;
    if (alone) this.ended = true;
    this.stream.respond(toHttp2Headers(headers, { ":status": status }), noBody ? { endStream: true } : { waitForTrailers: true });
  }

  write(chunk: Buffer): boolean {
    // An h2 stream's writable buffer is 16 KiB: asking the source to pause at that mark costs a
    // pause/resume round per 16 KiB of a download. 'drain' still follows once the buffer empties.
    return this.stream.write(chunk) || this.stream.writableLength < WRITE_BUFFER_BYTES;
  }

  end(body?: Buffer, trailers?: RawHeaders): void {
    this.ended = true;
    if (this.stream.closed || this.stream.destroyed) return;
    if (trailers) this.trailers = trailers;
    // A stream that ended with its head (HEAD, 204, 304) takes no body.
    if (this.stream.writableEnded) return;
    if (body) this.stream.end(body);
    else this.stream.end();
  }

  fail(): void {
    resetStream(this.stream, constants.NGHTTP2_INTERNAL_ERROR);
  }

  onDrain(listener: () => void): void {
    this.stream.on("drain", listener);
  }

  onClose(listener: () => void): void {
    this.stream.once("close", listener);
  }

  /** RFC 8441: the upstream's 101 becomes 200 on the extended CONNECT stream, which then carries the bytes. */
  upgrade(status: number, _reason: string | undefined, headers: RawHeaders): Duplex {
    const code = status === 101 ? 200 : status;
    this.statusSent = code;
    this.stream.respond(toHttp2Headers(headers, { ":status": code }, NOT_IN_EXTENDED_CONNECT));
    return this.stream;
  }
}
