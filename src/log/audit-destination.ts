import fs from "node:fs";
import pino, { type DestinationStream } from "pino";

/** The audit log's destination: sonic-boom as pino.destination opens it (or a stream an embedder gave). */
export interface AuditDestination extends DestinationStream {
  reopen(file?: string): void;
  /** Writes what is held, then fsyncs the file (sonic-boom). It retries a failed write until it succeeds. */
  flushSync(): void;
  /**
   * Writes what is held, synchronously on a destination opened with `sync`, without an fsync,
   * until at most minLength bytes are left. A failure is an `error` event; the lines stay held.
   */
  flush(): void;
  end?(): void;
  /** sonic-boom's file descriptor (absent on a stream given by an embedder). */
  readonly fd?: number;
  on?(event: "error", listener: (error: NodeJS.ErrnoException) => void): unknown;
  on?(event: "drop", listener: () => void): unknown;
}

/** Lines are held until this many bytes are waiting (sonic-boom's minLength), then written in one append. */
const BATCH_BYTES = 4096;
/** ... or until this long after the first of them: how late a line may reach the file. */
export const AUDIT_FLUSH_MS = 100;
/** While the destination refuses writes, how often the held lines are tried again. */
export const AUDIT_RETRY_MS = 1000;
/** The most held while the destination refuses writes (lines past it are dropped, and counted). */
export const AUDIT_HOLD_BYTES = 16 * 1024 * 1024;

export function openAuditDestination(target: string): AuditDestination {
  // Synchronous appends (no line is ever split or reordered), batched: one write system call
  // for several lines, like squid's buffered_logs and nginx's access_log buffer=.
  const options = { sync: true, minLength: BATCH_BYTES, maxLength: AUDIT_HOLD_BYTES };
  if (target === "-") return pino.destination({ dest: 1, ...options }) as AuditDestination;
  const probe = fifoReaderProbe(target);
  try {
    return pino.destination({ dest: target, mkdir: true, ...options }) as AuditDestination;
  } finally {
    // Held open until the real open is done: closed first, it could be the last writer the
    // reader sees leave, and the reader would go before the real open found it.
    if (probe !== undefined) fs.closeSync(probe);
  }
}

/**
 * Opening a FIFO to write waits for a reader, and the open is synchronous: with none, the whole
 * proxy would stop (start hung before listening, a reload froze every connection). A FIFO is
 * opened only once a non-blocking open shows a reader is there; that descriptor is returned, to
 * be closed once the real open is done.
 */
function fifoReaderProbe(target: string): number | undefined {
  let fifo = false;
  try {
    fifo = fs.statSync(target).isFIFO();
  } catch {
    return undefined;
  }
  if (!fifo) return undefined;
  try {
    return fs.openSync(target, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENXIO") throw error;
    throw Object.assign(new Error(`the audit log ${target} is a FIFO with no reader: start its reader first`), { code: "ENXIO" });
  }
}

/**
 * Bytes the destination holds and has not written: sonic-boom's own count (`_len`, what its
 * write and flush compare with minLength and maxLength). None for a stream that keeps no count.
 */
export function heldBytes(stream: DestinationStream): number {
  return (stream as { _len?: number })._len ?? 0;
}
