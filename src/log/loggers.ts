import pino, { type DestinationStream, type Logger } from "pino";
import { levelFor, type AuditRecord } from "../core/audit-record.js";
import { AUDIT_FLUSH_MS, openAuditDestination, type AuditDestination } from "./audit-destination.js";
import { AuditFeed, type PublishedRecord } from "./audit-feed.js";
import type { Scrubber } from "./scrub.js";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

/** pino's numbers for the audit levels, so the line reads as pino's own would. */
const LEVEL_NUMBERS = { info: 30, warn: 40, error: 50 } as const;

/**
 * The canonical audit log: one JSON line per finished event, scrubbed of every known secret.
 * The line is pino's shape (`level`, `time`, the fields, `msg`) written to pino's destination
 * (sonic-boom: synchronous appends of whole lines, batched up to 4 KiB and at most
 * AUDIT_FLUSH_MS late; reopen for logrotate), serialised with JSON.stringify
 * rather than through a pino logger: the record has one fixed, acyclic shape, and pino's
 * per-field serialiser cost about as much again as the write itself.
 */
export class AuditLog {
  private stream: AuditDestination;
  /** Every record written, scrubbed, for traces and the live view. */
  readonly feed = new AuditFeed();
  /** Writes what the destination holds AUDIT_FLUSH_MS after the first line it held. */
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(
    private target: string,
    private scrubber: Scrubber,
    stream?: DestinationStream,
    /** Sees every record written (metrics). */
    private readonly onRecord: (record: AuditRecord) => void = () => undefined,
  ) {
    this.stream = (stream as AuditDestination) ?? openAuditDestination(target);
  }

  get destination(): string {
    return this.target;
  }

  /**
   * Sends the following lines to another destination (a changed log.audit on reload). What the
   * old one holds is written first, so no line is lost or split across the switch. False when the
   * log writes to a stream it was given (embedding), which it cannot replace.
   */
  retarget(target: string, scrubber: Scrubber): boolean {
    if (target === this.target) return true;
    if (this.target === "stream") return false;
    const next = openAuditDestination(target);
    this.flush();
    const previous = this.stream;
    const closePrevious = this.target !== "-"; // never close the process' stdout
    this.stream = next;
    this.scrubber = scrubber;
    this.target = target;
    if (closePrevious) (previous as AuditDestination & { end?(): void }).end?.();
    return true;
  }

  write(record: AuditRecord): void {
    const level = LEVEL_NUMBERS[levelFor(record)];
    const time = Date.now();
    const line = auditLine(record, level, time);
    const scrubbed = this.scrubber.scrub(line);
    this.stream.write(scrubbed);
    if (!this.flushTimer && this.target !== "stream") {
      this.flushTimer = setTimeout(() => this.writeHeld(), AUDIT_FLUSH_MS).unref();
      flushOnExit(this);
    }
    this.onRecord(record);
    // Watchers get what the line says: the record itself when scrubbing changed nothing, else the scrubbed line read back.
    if (this.feed.active) this.feed.publish(scrubbed === line ? publishedRecord(record, level, time) : (JSON.parse(scrubbed) as PublishedRecord));
  }

  /** Reopen the file after logrotate moved it (what is held goes to the old file first). */
  reopen(): void {
    if (this.target === "-" || typeof this.stream.reopen !== "function") return;
    this.flush();
    this.stream.reopen();
  }

  /**
   * The timer's write of what is held, without the fsync that flushSync adds: a disk sync blocks
   * the event loop, and every connection with it, for as long as the disk takes, and under load
   * this runs ten times a second. Once written, the lines are the kernel's and survive the
   * process however it dies; an fsync guards only against the machine going down, which no
   * access log (squid's, nginx's) pays for on every batch.
   */
  private writeHeld(): void {
    this.flushTimer = undefined;
    try {
      this.stream.flush();
      unflushed.delete(this);
    } catch {
      // A write that failed (a full disk) leaves the lines held: the next write, or the exit, tries again.
    }
  }

  /** Writes every line held, now, and syncs the file (reload, close, exit). */
  flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    unflushed.delete(this);
    try {
      this.stream.flushSync?.();
    } catch {
      // Nothing buffered, or the destination is gone: nothing left to save.
    }
  }
}

/** The record as its line reads: pino's order, `level` and `time` first and `msg` last. */
function publishedRecord(record: AuditRecord, level: number, time: number): PublishedRecord {
  const { msg, ...fields } = record;
  return { level, time, ...fields, msg };
}

/**
 * The record's line, as JSON.stringify(publishedRecord(...)) would write it. Every producer puts
 * `msg` first, so the record's own JSON is re-ordered as text (one serialisation, no copies of
 * the record); one that does not is copied into order.
 */
export function auditLine(record: AuditRecord, level: number, time: number): string {
  const json = JSON.stringify(record);
  const msg = JSON.stringify(record.msg);
  const lead = `{"msg":${msg}`;
  if (!json.startsWith(lead)) return `${JSON.stringify(publishedRecord(record, level, time))}\n`;
  // What follows msg: "" when it is the only field, else ",<the other fields>".
  return `{"level":${level},"time":${time}${json.slice(lead.length, -1)},"msg":${msg}}\n`;
}

/** Logs holding lines not yet written, flushed when the process exits however it exits (SIGTERM flushes first, in close). */
const unflushed = new Set<AuditLog>();
let exitHookInstalled = false;

function flushOnExit(log: AuditLog): void {
  unflushed.add(log);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const pending of unflushed) pending.flush();
  });
}

/** Operator diagnostics on stderr (start-up, reloads, internal faults), scrubbed like the audit log. */
export function createDiagnostics(level: LogLevel, scrubber: Scrubber, stream?: DestinationStream): Logger {
  return pino(
    { base: undefined, level, name: "portcullis", hooks: { streamWrite: (line) => scrubber.scrub(line) } },
    stream ?? pino.destination({ dest: 2, sync: true }),
  );
}
