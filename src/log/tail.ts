import { createReadStream, statSync, watch, type FSWatcher, type Stats } from "node:fs";
import { open } from "node:fs/promises";
import { createInterface } from "node:readline";
import { StringDecoder } from "node:string_decoder";
import { dirname } from "node:path";
import type { Readable } from "node:stream";
import { printable } from "../core/printable.js";
import { formatLine, lineFields, matchesFilters, type AuditLineFields, type TailFilters } from "./tail-format.js";

/** Where rendered lines go: stdout, or anything with a write. */
export interface LineSink {
  write(text: string): unknown;
}

export interface TailOptions extends TailFilters {
  json?: boolean;
  colour?: boolean;
  follow?: boolean;
}

/** Formats (or passes through, with --json) the lines that match the filters; anything not JSON is passed as is. */
export function renderLine(text: string, options: TailOptions): string | undefined {
  if (text.trim() === "") return undefined;
  let line: AuditLineFields | undefined;
  try {
    line = lineFields(JSON.parse(text));
  } catch {
    line = undefined;
  }
  // Not an audit line (a torn write, another program's text): shown as it is, escapes made visible.
  if (!line) return options.json ? undefined : printable(text);
  if (!matchesFilters(line, options)) return undefined;
  return options.json ? text : formatLine(line, options.colour ?? false);
}

export async function tailStream(input: Readable, output: LineSink, options: TailOptions): Promise<void> {
  const lines = createInterface({ input, crlfDelay: Infinity });
  for await (const text of lines) {
    const rendered = renderLine(text, options);
    if (rendered !== undefined) output.write(`${rendered}\n`);
  }
}

const READ_CHUNK = 1024 * 1024;
/** How often a missing or rotated file is looked for again, besides the watch. */
const POLL_MS = 1000;

function exists(file: string): boolean {
  try {
    statSync(file);
    return true;
  } catch {
    return false;
  }
}

/** Resolves once the file exists (a watch on its folder, and a poll for folders that cannot be watched), or on abort. */
async function waitForFile(file: string, signal?: AbortSignal): Promise<boolean> {
  if (exists(file)) return true;
  return new Promise<boolean>((resolve) => {
    let watcher: FSWatcher | undefined;
    const finish = (found: boolean) => {
      clearInterval(poll);
      watcher?.close();
      signal?.removeEventListener("abort", onAbort);
      resolve(found);
    };
    const check = () => exists(file) && finish(true);
    const onAbort = () => finish(false);
    const poll = setInterval(check, POLL_MS);
    try {
      watcher = watch(dirname(file), { persistent: true }, check);
      watcher.on("error", () => undefined);
    } catch {
      // A folder that does not exist yet either: the poll finds the file when it comes.
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    check();
  });
}

/**
 * Prints the last `lines` matching events of the file (all of them when undefined), then
 * (with follow) what is appended to it, like `tail -F`: a missing file is waited for, and a
 * file that shrinks or is replaced (logrotate) is read again from its start. Reads go in
 * 1 MiB chunks, whatever the backlog, and UTF-8 split across two reads is carried over intact.
 */
export async function tailFile(file: string, output: LineSink, options: TailOptions & { lines?: number }, signal?: AbortSignal, onWaiting?: () => void): Promise<void> {
  if (!options.follow) {
    if (options.lines === undefined) {
      await tailStream(createReadStream(file), output, options);
      return;
    }
    const last = new LastLines(options.lines);
    await tailStream(createReadStream(file), last, options);
    last.flushTo(output);
    return;
  }
  if (!exists(file)) {
    onWaiting?.();
    if (!(await waitForFile(file, signal))) return;
  } else if (options.lines !== undefined) {
    // The backlog is read into a window of the last N; what comes after is printed as it comes.
    const last = new LastLines(options.lines);
    await followFile(file, last, options, signal, () => last.flushTo(output, true));
    return;
  }
  await followFile(file, output, options, signal);
}

/** Keeps only the last N lines written to it until flushed; then (with passOn) forwards the rest. */
class LastLines implements LineSink {
  private kept: string[] = [];
  private target: LineSink | undefined;

  constructor(private readonly limit: number) {}

  write(text: string): void {
    this.add(text);
  }

  private add(text: string): void {
    if (this.target) {
      this.target.write(text);
      return;
    }
    if (this.limit === 0) return;
    this.kept.push(text);
    if (this.kept.length > this.limit) this.kept.shift();
  }

  /** Writes what was kept; with `passOn`, later lines go straight to the target. */
  flushTo(target: LineSink, passOn = false): void {
    for (const text of this.kept) target.write(text);
    this.kept = [];
    if (passOn) this.target = target;
  }
}

async function followFile(file: string, output: LineSink, options: TailOptions, signal?: AbortSignal, afterBacklog?: () => void): Promise<void> {
  let position = 0;
  let pending = "";
  let decoder = new StringDecoder("utf8");
  let identity: Stats | undefined;
  const emit = (text: string) => {
    const parts = (pending + text).split("\n");
    pending = parts.pop() ?? "";
    for (const part of parts) {
      const rendered = renderLine(part, options);
      if (rendered !== undefined) output.write(`${rendered}\n`);
    }
  };
  const readMore = async () => {
    let stats: Stats;
    try {
      stats = statSync(file);
    } catch {
      return;
    }
    if (identity && (stats.ino !== identity.ino || stats.size < position)) {
      position = 0;
      pending = "";
      decoder = new StringDecoder("utf8");
    }
    identity = stats;
    if (stats.size <= position) return;
    const handle = await open(file, "r");
    try {
      const buffer = Buffer.alloc(Math.min(READ_CHUNK, stats.size - position));
      while (position < stats.size) {
        const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, stats.size - position), position);
        if (bytesRead === 0) break;
        position += bytesRead;
        emit(decoder.write(buffer.subarray(0, bytesRead)));
      }
    } finally {
      await handle.close();
    }
  };
  await readMore();
  afterBacklog?.();
  let running = Promise.resolve();
  const schedule = () => {
    running = running.then(readMore, readMore);
  };
  const watcher = watch(file, { persistent: true }, schedule);
  // Rotation replaces the file; a slow poll catches what the watch on the old inode cannot.
  const poll = setInterval(schedule, POLL_MS);
  await new Promise<void>((resolve) => {
    if (signal?.aborted) resolve();
    signal?.addEventListener("abort", () => resolve(), { once: true });
  });
  clearInterval(poll);
  watcher.close();
  await running;
}
