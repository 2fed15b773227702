import type { RawHeaders } from "../../core/headers.js";
import type { UpstreamCall } from "../../core/messages.js";

/** Buffered before backpressure is asked for, while the upstream connection is still being set up. */
const HIGH_WATER = 64 * 1024;

/**
 * A call whose connection is not there yet (the upstream's protocol is being learnt): the
 * body is held, up to a high-water mark, and handed over once it is.
 */
export class DeferredCall implements UpstreamCall {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private ending: { trailers: RawHeaders | undefined } | undefined;
  private aborted = false;
  private real: UpstreamCall | undefined;
  private readonly drains: (() => void)[] = [];

  write(chunk: Buffer): boolean {
    if (this.real) return this.real.write(chunk);
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    return this.buffered < HIGH_WATER;
  }

  onDrain(listener: () => void): void {
    if (this.real) this.real.onDrain(listener);
    else this.drains.push(listener);
  }

  end(trailers?: RawHeaders): void {
    if (this.real) this.real.end(trailers);
    else this.ending = { trailers };
  }

  abort(): void {
    this.aborted = true;
    this.real?.abort();
  }

  get isAborted(): boolean {
    return this.aborted;
  }

  /** The connection is ready: everything held goes to `real`, and later calls go straight there. */
  attach(real: UpstreamCall): void {
    this.real = real;
    if (this.aborted) return real.abort();
    for (const listener of this.drains) real.onDrain(listener);
    let open = true;
    for (const chunk of this.chunks) open = real.write(chunk);
    this.chunks.length = 0;
    if (this.ending) real.end(this.ending.trailers);
    // The writer stopped at the high-water mark: it may go on.
    else if (open && this.buffered >= HIGH_WATER) for (const listener of this.drains) listener();
  }
}
