import type { RawHeaders } from "../../core/headers.js";
import type { UpstreamCall } from "../../core/messages.js";

/** A bodyless call that may be sent a second time: abort and end reach whichever attempt is current. */
export class ResentCall implements UpstreamCall {
  resent = false;
  aborted = false;
  private current: UpstreamCall | undefined;
  private ended: { trailers: RawHeaders | undefined } | undefined;

  use(call: UpstreamCall): void {
    this.current = call;
    if (this.aborted) return call.abort();
    if (this.ended) call.end(this.ended.trailers);
  }

  write(chunk: Buffer): boolean {
    return this.current?.write(chunk) ?? true;
  }

  onDrain(listener: () => void): void {
    this.current?.onDrain(listener);
  }

  end(trailers?: RawHeaders): void {
    this.ended = { trailers };
    this.current?.end(trailers);
  }

  abort(): void {
    this.aborted = true;
    this.current?.abort();
  }
}
