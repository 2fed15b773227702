import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { getHeader, type RawHeaders } from "../../core/headers.js";
import type { Responder } from "../../core/messages.js";

function serializeHead(status: number, reason: string, headers: RawHeaders): string {
  let head = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}\r\n`;
}

/**
 * HTTP/1.1 written straight onto a connection that has no ServerResponse: an upgrade
 * handshake, or an answer to CONNECT. Anything but a 101 (or a CONNECT's 200) ends the
 * connection after its body, which is framed by that close.
 */
export class SocketResponder implements Responder {
  readonly httpVersion = "1.1" as const;
  statusSent: number | undefined;
  private ended = false;

  constructor(
    private readonly socket: Duplex,
    /** Bytes the client sent after the handshake, handed back with the upgraded stream. */
    private readonly head: Buffer = Buffer.alloc(0),
  ) {}

  get headersSent(): boolean {
    return this.statusSent !== undefined;
  }

  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  get finished(): boolean {
    return this.ended && this.socket.writableFinished;
  }

  writeContinue(): void {
    this.socket.write("HTTP/1.1 100 Continue\r\n\r\n");
  }

  writeHead(status: number, reason: string | undefined, headers: RawHeaders, alone = false): void {
    this.statusSent = status;
    const closing = getHeader(headers, "connection") === undefined ? [...headers, "Connection", "close"] : headers;
    this.socket.write(serializeHead(status, reason ?? STATUS_CODES[status] ?? "Error", closing));
    if (alone) this.end();
  }

  write(chunk: Buffer): boolean {
    return this.socket.write(chunk);
  }

  end(body?: Buffer): void {
    this.ended = true;
    if (!this.socket.writable) {
      this.socket.destroy();
      return;
    }
    if (body) this.socket.end(body);
    else this.socket.end();
    (this.socket as Duplex & { destroySoon?(): void }).destroySoon?.();
  }

  fail(): void {
    this.socket.destroy();
  }

  onDrain(listener: () => void): void {
    this.socket.on("drain", listener);
  }

  onClose(listener: () => void): void {
    this.socket.once("close", listener);
  }

  upgrade(status: number, reason: string | undefined, headers: RawHeaders): Duplex {
    this.statusSent = status;
    this.socket.write(serializeHead(status, reason ?? STATUS_CODES[status] ?? "", headers));
    const socket = this.socket as Socket;
    socket.setTimeout?.(0);
    socket.setNoDelay?.(true);
    socket.setKeepAlive?.(true, 30_000);
    if (this.head.length) socket.unshift(this.head);
    return socket;
  }
}
