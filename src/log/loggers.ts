import pino, { type DestinationStream, type Logger } from "pino";
import { levelFor, type AuditRecord } from "../core/audit-record.js";
import type { Scrubber } from "./scrub.js";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

interface ReopenableStream extends DestinationStream {
  reopen(file?: string): void;
  flushSync(): void;
}

/** The canonical audit log: one JSON line per finished event, scrubbed of every known secret. */
export class AuditLog {
  private logger: Logger;
  private stream: ReopenableStream;

  constructor(
    private target: string,
    scrubber: Scrubber,
    stream?: DestinationStream,
    /** Sees every record written (metrics). */
    private readonly onRecord: (record: AuditRecord) => void = () => undefined,
  ) {
    this.stream = (stream as ReopenableStream) ?? openDestination(target);
    this.logger = auditLogger(scrubber, this.stream);
  }

  get destination(): string {
    return this.target;
  }

  /**
   * Sends the following lines to another destination (a changed log.audit on reload). Lines
   * are written synchronously, so none is lost or split across the switch. False when the
   * log writes to a stream it was given (embedding), which it cannot replace.
   */
  retarget(target: string, scrubber: Scrubber): boolean {
    if (target === this.target) return true;
    if (this.target === "stream") return false;
    const next = openDestination(target);
    this.flush();
    const previous = this.stream;
    const closePrevious = this.target !== "-"; // never close the process' stdout
    this.stream = next;
    this.logger = auditLogger(scrubber, next);
    this.target = target;
    if (closePrevious) (previous as ReopenableStream & { end?(): void }).end?.();
    return true;
  }

  write(record: AuditRecord): void {
    const { msg, ...fields } = record;
    this.logger[levelFor(record)](fields, msg);
    this.onRecord(record);
  }

  /** Reopen the file after logrotate moved it. */
  reopen(): void {
    if (this.target !== "-" && typeof this.stream.reopen === "function") this.stream.reopen();
  }

  flush(): void {
    try {
      this.stream.flushSync?.();
    } catch {
      // Nothing buffered, or the destination is gone: nothing left to save.
    }
  }
}

function auditLogger(scrubber: Scrubber, stream: DestinationStream): Logger {
  return pino({ base: undefined, level: "info", hooks: { streamWrite: (line) => scrubber.scrub(line) } }, stream);
}

function openDestination(target: string): ReopenableStream {
  // Synchronous appends (pino's default): cheaper per line than sonic-boom's async path, and
  // nothing is lost if the process dies.
  return (target === "-" ? pino.destination({ dest: 1, sync: true }) : pino.destination({ dest: target, mkdir: true, sync: true })) as ReopenableStream;
}

/** Operator diagnostics on stderr (start-up, reloads, internal faults), scrubbed like the audit log. */
export function createDiagnostics(level: LogLevel, scrubber: Scrubber, stream?: DestinationStream): Logger {
  return pino(
    { base: undefined, level, name: "portcullis", hooks: { streamWrite: (line) => scrubber.scrub(line) } },
    stream ?? pino.destination({ dest: 2, sync: true }),
  );
}
