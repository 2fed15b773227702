import pino, { type DestinationStream, type Logger } from "pino";
import { levelFor, type AuditRecord } from "../core/audit-record.js";
import { AuditFeed, type PublishedRecord } from "./audit-feed.js";
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
  /** Every record written, scrubbed, for traces and the live view. */
  readonly feed = new AuditFeed();
  private lastLine = "";

  constructor(
    private target: string,
    scrubber: Scrubber,
    stream?: DestinationStream,
    /** Sees every record written (metrics). */
    private readonly onRecord: (record: AuditRecord) => void = () => undefined,
  ) {
    this.stream = (stream as ReopenableStream) ?? openDestination(target);
    this.logger = this.auditLogger(scrubber, this.stream);
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
    this.logger = this.auditLogger(scrubber, next);
    this.target = target;
    if (closePrevious) (previous as ReopenableStream & { end?(): void }).end?.();
    return true;
  }

  write(record: AuditRecord): void {
    const { msg, ...fields } = record;
    this.logger[levelFor(record)](fields, msg);
    this.onRecord(record);
    if (this.feed.active && this.lastLine) {
      // pino wrote the line synchronously: the one just scrubbed is this record's.
      const line = this.lastLine;
      this.lastLine = "";
      this.feed.publish(JSON.parse(line) as PublishedRecord);
    }
  }

  private auditLogger(scrubber: Scrubber, stream: DestinationStream): Logger {
    const streamWrite = (line: string) => {
      const scrubbed = scrubber.scrub(line);
      if (this.feed.active) this.lastLine = scrubbed;
      return scrubbed;
    };
    return pino({ base: undefined, level: "info", hooks: { streamWrite } }, stream);
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
