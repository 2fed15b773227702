import { StringDecoder } from "node:string_decoder";

/** The text/event-stream wire format (WHATWG HTML 9.2), as every stage that reads event streams needs it. */

/** One server-sent event: its raw text, its field lines in order, and what a client makes of them. */
export interface SseEvent {
  raw: string;
  lines: string[];
  /** The `event` field; undefined (or "") is a "message" event. */
  event: string | undefined;
  data: string | undefined;
}

/** Field lines as the spec reads them: CRLF, LF or a lone CR ends a line; "data" alone is an empty data field. */
export function parseSseEvent(raw: string): SseEvent {
  let event: string | undefined;
  let data: string[] | undefined;
  const lines = raw.split(/\r\n|\r|\n/).filter((line) => line !== "");
  for (const line of lines) {
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") (data ??= []).push(value);
  }
  return { raw, lines, event, data: data?.join("\n") };
}

/** A blank line ends an event. */
const EVENT_END = /(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)/g;

/**
 * Takes every complete event off the front of `buffer`, in order, and returns what is left
 * (an unfinished event). A CR at the very end may be the first half of a CRLF, so it waits,
 * unless the stream is over. `handle` returns false to stop reading.
 */
export function takeSseEvents(buffer: string, atEnd: boolean, handle: (event: SseEvent) => boolean): string {
  let consumed = 0;
  EVENT_END.lastIndex = 0;
  for (let match = EVENT_END.exec(buffer); match; match = EVENT_END.exec(buffer)) {
    const end = match.index + match[0].length;
    if (!atEnd && end === buffer.length && buffer.endsWith("\r")) break;
    const goOn = handle(parseSseEvent(buffer.slice(consumed, end)));
    consumed = end;
    if (!goOn) break;
  }
  return buffer.slice(consumed);
}

/**
 * An event stream's bytes as text: UTF-8 split across chunks carried over, and one leading
 * byte-order mark dropped (as a client drops it; kept, it would change the first field name).
 */
export class SseText {
  private readonly decoder = new StringDecoder("utf8");
  private started = false;

  /** The text of the next chunk. */
  next(chunk: Buffer): string {
    const text = this.decoder.write(chunk);
    if (this.started || text.length === 0) return text;
    this.started = true;
    return text.startsWith("\uFEFF") ? text.slice(1) : text;
  }

  /** What an unfinished character left at the end. */
  end(): string {
    return this.decoder.end();
  }
}
