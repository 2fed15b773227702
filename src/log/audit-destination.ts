import pino, { type DestinationStream } from "pino";

/** The audit log's destination: sonic-boom as pino.destination opens it (or a stream an embedder gave). */
export interface AuditDestination extends DestinationStream {
  reopen(file?: string): void;
  /** Writes what is held, then fsyncs the file (sonic-boom). */
  flushSync(): void;
  /** Writes what is held; synchronous on a destination opened with `sync`, and no fsync. */
  flush(): void;
}

/** Lines are held until this many bytes are waiting (sonic-boom's minLength), then written in one append. */
const BATCH_BYTES = 4096;
/** ... or until this long after the first of them: how late a line may reach the file. */
export const AUDIT_FLUSH_MS = 100;

export function openAuditDestination(target: string): AuditDestination {
  // Synchronous appends (no line is ever split or reordered), batched: one write system call
  // for several lines, like squid's buffered_logs and nginx's access_log buffer=.
  const options = { sync: true, minLength: BATCH_BYTES };
  return (target === "-" ? pino.destination({ dest: 1, ...options }) : pino.destination({ dest: target, mkdir: true, ...options })) as AuditDestination;
}
