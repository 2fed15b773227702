import { EventEmitter } from "node:events";
import fs from "node:fs";
import pino, { type DestinationStream, type Logger } from "pino";
import { levelFor, REDACTED, type AuditRecord } from "../core/audit-record.js";
import { ProxyError } from "../core/errors.js";
import { AUDIT_FLUSH_MS, AUDIT_HOLD_BYTES, AUDIT_RETRY_MS, heldBytes, openAuditDestination, type AuditDestination } from "./audit-destination.js";
import { AuditFeed, type PublishedRecord } from "./audit-feed.js";
import { OwedLines } from "./owed-lines.js";
import type { Scrubber } from "./scrub.js";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

/** What the audit log tells about its destination's health (diagnostics, metrics). */
export interface AuditHealthListener {
  /** The destination refused a write (a full disk, an I/O error, a closed stdout): the first refusal of an outage, with the destination named. */
  failed(message: string): void;
  /** The outage is over: the message says what it cost. */
  recovered(message: string): void;
  /** Something the operator should know that is no outage (a reopen that failed: the open file is kept). */
  warn(message: string): void;
  /** One line dropped during an outage: the hold is full (or half full, for a refusal's line), or the destination's reader is gone. */
  dropped(): void;
}

const NO_HEALTH_LISTENER: AuditHealthListener = { failed: () => undefined, recovered: () => undefined, warn: () => undefined, dropped: () => undefined };

/** pino's numbers for the audit levels, so the line reads as pino's own would. */
const LEVEL_NUMBERS = { info: 30, warn: 40, error: 50 } as const;

/**
 * The canonical audit log: one JSON line per finished event, scrubbed of every known secret.
 * The line is pino's shape (`level`, `time`, the fields, `msg`) written to pino's destination
 * (sonic-boom: synchronous appends of whole lines, batched up to 4 KiB and at most
 * AUDIT_FLUSH_MS late; reopen for logrotate), serialised with JSON.stringify
 * rather than through a pino logger: the record has one fixed, acyclic shape, and pino's
 * per-field serialiser cost about as much again as the write itself.
 *
 * A destination that refuses writes (ENOSPC, EIO, EPIPE) is an outage, not a crash: `failure`
 * says why, the proxy refuses new exchanges it could not record (fail closed), the lines already
 * held are kept (up to AUDIT_HOLD_BYTES) and retried every AUDIT_RETRY_MS, and the first write
 * of them all (by that retry, the batch timer, or a flush at reload, reopen or close) ends the outage.
 */
export class AuditLog {
  private stream: AuditDestination;
  /** Every record written, scrubbed, for traces and the live view. */
  readonly feed = new AuditFeed();
  /** Lines events have begun and not yet written (the drain waits for them). */
  readonly owed = new OwedLines();
  /** Writes what the destination holds AUDIT_FLUSH_MS after the first line it held. */
  private flushTimer: NodeJS.Timeout | undefined;
  /** Why the destination refused the last write; undefined while lines reach it. */
  private refused: string | undefined;
  /** The destination's reader is gone (EPIPE): pino made its writes no-ops, so every line is dropped. */
  private readerGone = false;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Writes the current destination refused, ever: a flush that adds none has succeeded. */
  private writeErrors = 0;
  /** Lines dropped in the current outage. */
  private droppedLines = 0;

  constructor(
    private target: string,
    private scrubber: Scrubber,
    stream?: DestinationStream,
    /** Sees every record written (metrics). */
    private readonly onRecord: (record: AuditRecord) => void = () => undefined,
    private readonly health: AuditHealthListener = NO_HEALTH_LISTENER,
  ) {
    this.stream = (stream as AuditDestination) ?? openAuditDestination(target);
    this.watch(this.stream);
  }

  /** Tells the health listener, which must not fail the audit write it reports on (stderr may be on the same full disk). */
  private tell(report: (listener: AuditHealthListener) => void): void {
    try {
      report(this.health);
    } catch {
      // The operator cannot be told; the outage itself is still enforced.
    }
  }

  /** Why lines cannot be written now (the destination's error), or undefined when they can. */
  get failure(): string | undefined {
    return this.refused;
  }

  /** Fail closed: the answer to what would start now (`requests`, `tunnels`) while lines cannot be written, or undefined. */
  refusal(what: "requests" | "tunnels"): ProxyError | undefined {
    return this.refused === undefined ? undefined : new ProxyError("audit_unavailable", `${this.refused}, so ${what} are refused until it can`);
  }

  /** The outage cannot end by itself (the destination's reader is gone): a restart, or a reload to another log.audit, ends it. */
  get lasting(): boolean {
    return this.readerGone;
  }

  private watch(stream: AuditDestination): void {
    // A stream an embedder gave is the embedder's to watch: its errors reach the embedder, as before.
    if (this.target === "stream" || typeof stream.on !== "function") return;
    stream.on("error", (error: NodeJS.ErrnoException) => {
      // Only a refused write is an outage; a failed open (reopen) is reported where it is called.
      if (stream !== this.stream || (error.syscall !== undefined && error.syscall !== "write")) return;
      this.writeErrors++;
      this.refuse(error);
    });
    stream.on("drop", () => {
      if (stream === this.stream) this.drop();
    });
  }

  /**
   * During an outage, lines of exchanges that sent nothing upstream and got an error (the
   * outage's own 503s, 407s, denials, malformed requests: an agent retrying in a loop makes
   * thousands) get only half of what may be held: the rest is kept for exchanges that ran.
   */
  private crowdsOut(record: AuditRecord): boolean {
    return record.error !== undefined && record.upstream_version === undefined && heldBytes(this.stream) >= AUDIT_HOLD_BYTES / 2;
  }

  private drop(): void {
    this.droppedLines++;
    this.tell((health) => health.dropped());
  }

  private refuse(error: NodeJS.ErrnoException): void {
    if (this.refused !== undefined) return;
    // The reason sandboxes are given names no path; the operator's diagnostic does.
    this.refused = `the audit log cannot be written (${error.code ?? "write failed"})`;
    this.readerGone = error.code === "EPIPE";
    const outlook = this.readerGone
      ? "; its reader is gone, so only a restart (or a reload to another log.audit) ends this: /healthz answers 503"
      : "; held lines are retried every second";
    this.tell((health) => health.failed(`the audit log ${this.describe()} cannot be written: ${error.message}${outlook}`));
    // A pipe whose reader is gone never takes another write.
    if (!this.readerGone) this.retryTimer = setInterval(() => this.writeHeld(), AUDIT_RETRY_MS).unref();
  }

  /** The outage ends; `abandonedBytes` were held for a destination given up for another. */
  private recover(abandonedBytes = 0): void {
    clearInterval(this.retryTimer);
    this.retryTimer = undefined;
    this.refused = undefined;
    this.readerGone = false;
    const dropped = this.droppedLines;
    this.droppedLines = 0;
    const costs = [dropped ? `${dropped} lines were dropped while it could not be` : "", abandonedBytes ? `${abandonedBytes} bytes held for the previous destination were lost` : ""].filter(Boolean);
    this.tell((health) => health.recovered(`the audit log ${this.describe()} is written again; ${costs.length ? costs.join(" and ") : "no line was lost"}`));
  }

  private describe(): string {
    return this.target === "-" ? "(stdout)" : this.target;
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
    // What the old destination still holds is what it refused: it is given up with it.
    const abandoned = heldBytes(previous);
    const closePrevious = this.target !== "-"; // never close the process' stdout
    this.stream = next;
    this.scrubber = scrubber;
    this.target = target;
    this.watch(next);
    // The new destination starts with a clean record: the old one's outage, if any, ends with it.
    if (this.refused !== undefined) this.recover(abandoned);
    if (closePrevious) {
      // end() would write what is held first, and a destination that refuses it would never
      // close; after EPIPE pino has made destroy() a no-op too, so its descriptor is closed here.
      if (abandoned) closeQuietly(previous.fd);
      else previous.end?.();
    }
    return true;
  }

  write(record: AuditRecord): void {
    const level = LEVEL_NUMBERS[levelFor(record)];
    const time = Date.now();
    const line = auditLine(record, level, time);
    let scrubbed = this.scrubber.scrub(line);
    // What the scrubbed line says (metrics and watchers get that); a secret of digits is redacted
    // inside a JSON number too, and that line no longer parses: then it is rebuilt field by field.
    const said = scrubbed === line ? undefined : parsed(scrubbed);
    const rebuilt = scrubbed !== line && !said ? this.rebuild(publishedRecord(record, level, time)) : undefined;
    if (rebuilt) scrubbed = rebuilt.line;
    if (this.readerGone || (this.refused !== undefined && this.crowdsOut(record))) this.drop();
    else this.stream.write(scrubbed);
    if (!this.flushTimer && this.target !== "stream") {
      this.flushTimer = setTimeout(() => this.writeHeld(), AUDIT_FLUSH_MS).unref();
      flushOnExit(this);
    }
    // Metrics and watchers get what the line says: the record itself when scrubbing changed
    // nothing, else the scrubbed line read back (a model name an upstream echoed can be a secret).
    if (rebuilt) {
      this.onRecord(rebuilt.counted);
      if (this.feed.active) this.feed.publish(rebuilt.shown);
      return;
    }
    this.onRecord(said ?? record);
    if (this.feed.active) this.feed.publish(said ?? publishedRecord(record, level, time));
  }

  /**
   * The line of a record whose scrubbed line does not parse: every string and key scrubbed, and
   * a number whose digits hold a secret written as "[REDACTED]", except `level` and `time`, which
   * portcullis makes itself (a redacted time would make the line unreadable, and no traffic
   * reaches it). The whole line is scrubbed once more, as every line is, unless that breaks it
   * again (a secret's form inside a \uXXXX escape JSON.stringify wrote): its fields are scrubbed
   * already. Metrics count a redacted number as the number it was: a byte count is not a label.
   */
  private rebuild(published: PublishedRecord): { line: string; shown: PublishedRecord; counted: PublishedRecord } {
    const { scrub } = this.scrubber;
    const shown = { ...scrubFields(published, scrub, true), level: published.level, time: published.time };
    const text = `${JSON.stringify(shown)}\n`;
    const again = scrub(text);
    return { line: again === text || parsed(again) ? again : text, shown, counted: scrubFields(published, scrub, false) };
  }

  /** Reopen the file after logrotate moved it (what is held goes to the old file first). */
  reopen(): void {
    if (this.target === "-" || typeof this.stream.reopen !== "function") return;
    this.flush();
    const stream = this.stream;
    const emitter = stream instanceof EventEmitter ? stream : undefined;
    const waiting = new Set(emitter?.rawListeners("ready"));
    try {
      stream.reopen();
    } catch (error) {
      // sonic-boom left a listener to close the old descriptor once a new one is ready: that
      // descriptor stays in use, and the next reopen would otherwise close it twice.
      for (const listener of emitter?.rawListeners("ready") ?? []) if (!waiting.has(listener)) emitter!.removeListener("ready", listener as () => void);
      this.tell((health) => health.warn(`the audit log ${this.target} cannot be reopened (${(error as Error).message}); lines still go to the file it had open`));
    }
  }

  /**
   * Writes every line held (for the batch timer, the retry timer and flush), without the fsync
   * that flushSync adds, and ends an outage once nothing is left held: a disk sync blocks
   * the event loop, and every connection with it, for as long as the disk takes, and under load
   * this runs ten times a second. Once written, the lines are the kernel's and survive the
   * process however it dies; an fsync guards only against the machine going down, which no
   * access log (squid's, nginx's) pays for on every batch.
   */
  private writeHeld(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const errors = this.writeErrors;
    // sonic-boom's flush stops once at most minLength bytes are held (a backlog is several
    // chunks): go on until none are, a write fails (an `error` event, the lines stay held), or
    // a pass makes no progress.
    for (let held = heldBytes(this.stream); held > 0; ) {
      try {
        this.stream.flush();
      } catch {
        break; // destroyed
      }
      const left = heldBytes(this.stream);
      if (this.writeErrors !== errors || left >= held) break;
      held = left;
    }
    if (this.writeErrors !== errors || heldBytes(this.stream) > 0) return; // still held: for the retry timer and the exit hook
    if (this.refused !== undefined) this.recover();
    unflushed.delete(this);
  }

  /** The proxy closed: what is held is written, and an outage is no longer retried (lines still written go to the destination, and the exit hook writes them). */
  close(): void {
    this.flush();
    clearInterval(this.retryTimer);
    this.retryTimer = undefined;
    const lost = this.refused === undefined ? 0 : heldBytes(this.stream);
    if (lost) this.tell((health) => health.warn(`the audit log ${this.describe()} still cannot be written: ${lost} bytes of audit lines are lost`));
  }

  /**
   * Writes every line held, now, and syncs the file (reload, close, exit). One attempt: a
   * destination that refuses it leaves the lines held and reports the outage, where sonic-boom's
   * flushSync would retry forever (a full disk would hang the exit).
   */
  flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (typeof this.stream.fd !== "number") {
      unflushed.delete(this);
      try {
        this.stream.flushSync?.();
      } catch {
        // A stream given by an embedder that cannot flush: nothing left to save.
      }
      return;
    }
    this.writeHeld();
    if (this.refused !== undefined) return;
    try {
      fs.fsyncSync(this.stream.fd);
    } catch {
      // stdout, a pipe or a terminal: nothing to sync.
    }
  }
}

/** A line read back; undefined when it is not JSON. */
function parsed(line: string): PublishedRecord | undefined {
  try {
    return JSON.parse(line) as PublishedRecord;
  } catch {
    return undefined;
  }
}

/**
 * A copy of a record with every string, and every key, scrubbed; with `numbers`, a number whose
 * digits hold a secret becomes the string "[REDACTED]", else numbers are kept.
 */
function scrubFields<T>(value: T, scrub: (text: string) => string, numbers: boolean): T {
  const copy = (item: unknown): unknown => {
    if (typeof item === "string") return scrub(item);
    if (typeof item === "number") return numbers && scrub(String(item)) !== String(item) ? REDACTED : item;
    if (Array.isArray(item)) return item.map(copy);
    if (item === null || typeof item !== "object") return item;
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(item)) {
      if (inner === undefined) continue;
      const name = scrub(key);
      // A "__proto__" field (a header's name, say) is kept as a field, not taken as the prototype.
      if (name === "__proto__") Object.defineProperty(out, name, { value: copy(inner), enumerable: true, writable: true, configurable: true });
      else out[name] = copy(inner);
    }
    return out;
  };
  return copy(value) as T;
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

function closeQuietly(fd: number | undefined): void {
  if (fd === undefined || fd < 0) return;
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed.
  }
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
