import { readFileSync } from "node:fs";
import { rename, writeFile } from "node:fs/promises";
import type { Counter } from "./store.js";

/** The least time between two writes of the state file. */
export const STATE_WRITE_INTERVAL_MS = 1000;

interface Saved {
  version: 1;
  counters: Counter[];
}

function isCounter(value: unknown): value is Counter {
  if (typeof value !== "object" || value === null) return false;
  const c = value as Record<string, unknown>;
  return (
    typeof c.rule === "string" &&
    (c.client === null || typeof c.client === "string") &&
    [c.windowStart, c.windowEnd, c.tokens, c.requests].every((n) => typeof n === "number" && Number.isFinite(n))
  );
}

/**
 * The memory store's counters on disk: loaded at start, written after a change at most once a
 * second (a busy proxy does not write per request), each write to a temporary file renamed over
 * the old one so a crash mid-write never leaves half a file.
 */
export class StateFile {
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private lastWrite = 0;
  private dirty = false;

  constructor(
    readonly path: string,
    private readonly warn: (message: string) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** The counters saved, without those whose window has ended; none when there is no file yet. */
  load(): Counter[] {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") this.warn(`budget state file ${this.path} could not be read (${(error as Error).message}); starting with empty counters`);
      return [];
    }
    try {
      const saved = JSON.parse(text) as Saved;
      const now = this.now();
      return (Array.isArray(saved.counters) ? saved.counters : []).filter(isCounter).filter((counter) => counter.windowEnd > now);
    } catch {
      this.warn(`budget state file ${this.path} is not valid JSON; starting with empty counters`);
      return [];
    }
  }

  /** Counters changed: write them soon (at most once per STATE_WRITE_INTERVAL_MS). */
  changed(snapshot: () => Counter[]): void {
    this.dirty = true;
    if (this.timer) return;
    const wait = Math.max(0, this.lastWrite + STATE_WRITE_INTERVAL_MS - this.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.write(snapshot());
    }, wait);
    this.timer.unref();
  }

  /** Writes now, if anything changed since the last write (at close). */
  async flush(snapshot: () => Counter[]): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.dirty) await this.write(snapshot());
    await this.writing;
  }

  private write(counters: Counter[]): Promise<void> {
    this.lastWrite = this.now();
    this.dirty = false;
    const body = JSON.stringify({ version: 1, counters } satisfies Saved);
    const temporary = `${this.path}.${process.pid}.tmp`;
    this.writing = this.writing
      .then(() => writeFile(temporary, body, { mode: 0o600 }))
      .then(() => rename(temporary, this.path))
      .catch((error: Error) => this.warn(`budget state file ${this.path} could not be written: ${error.message}`));
    return this.writing;
  }
}
