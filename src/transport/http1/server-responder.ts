import type { ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { headerPairs, type RawHeaders } from "../../core/headers.js";
import type { Responder } from "../../core/messages.js";

/** The pipeline's responder over Node's HTTP/1.1 ServerResponse (header case and order kept). */
export class Http1Responder implements Responder {
  readonly httpVersion = "1.1" as const;

  constructor(private readonly res: ServerResponse) {
    res.sendDate = false;
  }

  get headersSent(): boolean {
    return this.res.headersSent;
  }

  get statusSent(): number | undefined {
    return this.res.headersSent ? this.res.statusCode : undefined;
  }

  get destroyed(): boolean {
    return this.res.destroyed;
  }

  get finished(): boolean {
    return this.res.writableFinished;
  }

  writeContinue(): void {
    this.res.writeContinue();
  }

  writeHead(status: number, reason: string | undefined, headers: RawHeaders, alone = false): void {
    if (reason === undefined) this.res.writeHead(status, headers);
    else this.res.writeHead(status, reason, headers);
    if (alone) this.res.end();
  }

  write(chunk: Buffer): boolean {
    return this.res.write(chunk);
  }

  end(body?: Buffer, trailers?: RawHeaders): void {
    if (trailers?.length) this.res.addTrailers(headerPairs(trailers));
    if (body) this.res.end(body);
    else this.res.end();
  }

  fail(): void {
    this.res.destroy();
  }

  onDrain(listener: () => void): void {
    this.res.on("drain", listener);
  }

  onClose(listener: () => void): void {
    this.res.once("close", listener);
  }

  upgrade(): Duplex {
    throw new Error("an HTTP/1.1 request that is not an upgrade cannot be upgraded");
  }
}
