import { createReadStream, statSync, watch, type Stats } from "node:fs";
import { open } from "node:fs/promises";
import { createInterface } from "node:readline";
import { StringDecoder } from "node:string_decoder";
import type { Readable, Writable } from "node:stream";
import { formatLine, matchesFilters, type AuditLineFields, type TailFilters } from "./tail-format.js";

export interface TailOptions extends TailFilters {
  json?: boolean;
  colour?: boolean;
  follow?: boolean;
}

/** Formats (or passes through, with --json) the lines that match the filters; anything not JSON is passed as is. */
export function renderLine(text: string, options: TailOptions): string | undefined {
  if (text.trim() === "") return undefined;
  let line: AuditLineFields;
  try {
    line = JSON.parse(text) as AuditLineFields;
  } catch {
    return options.json ? undefined : text;
  }
  if (!matchesFilters(line, options)) return undefined;
  return options.json ? text : formatLine(line, options.colour ?? false);
}

export async function tailStream(input: Readable, output: Writable, options: TailOptions): Promise<void> {
  const lines = createInterface({ input, crlfDelay: Infinity });
  for await (const text of lines) {
    const rendered = renderLine(text, options);
    if (rendered !== undefined) output.write(`${rendered}\n`);
  }
}

/**
 * Prints the file, then (with follow) what is appended to it, like `tail -F`: a file that
 * shrinks or is replaced (logrotate) is read again from its start.
 */
const READ_CHUNK = 1024 * 1024;

/**
 * Prints the file, then (with follow) what is appended to it, like `tail -F`: a file that
 * shrinks or is replaced (logrotate) is read again from its start. Reads go in 1 MiB chunks,
 * whatever the backlog, and UTF-8 split across two reads is carried over intact.
 */
export async function tailFile(file: string, output: Writable, options: TailOptions, signal?: AbortSignal): Promise<void> {
  if (!options.follow) {
    await tailStream(createReadStream(file), output, options);
    return;
  }
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
  let running = Promise.resolve();
  const schedule = () => {
    running = running.then(readMore, readMore);
  };
  const watcher = watch(file, { persistent: true }, schedule);
  // Rotation replaces the file; a slow poll catches what the watch on the old inode cannot.
  const poll = setInterval(schedule, 1000);
  await new Promise<void>((resolve) => {
    if (signal?.aborted) resolve();
    signal?.addEventListener("abort", () => resolve(), { once: true });
  });
  clearInterval(poll);
  watcher.close();
  await running;
}
