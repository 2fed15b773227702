import { Transform, type TransformCallback } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import { rewriteAnswer, type ToolFilter } from "./answers.js";
import { MAX_MCP_BODY_BYTES, NotJsonRpc } from "./jsonrpc.js";

/** One server-sent event: its field lines in order, and what a client makes of them. */
interface SseEvent {
  raw: string;
  lines: string[];
  /** The `event` field; undefined (or "") is a "message" event. */
  type: string | undefined;
  data: string | undefined;
}

/** Field lines as the SSE spec reads them: CRLF, LF or a lone CR ends a line; "data" alone is an empty data field. */
function parseEvent(raw: string): SseEvent {
  let type: string | undefined;
  let data: string[] | undefined;
  const lines = raw.split(/\r\n|\r|\n/).filter((line) => line !== "");
  for (const line of lines) {
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") type = value;
    else if (field === "data") (data ??= []).push(value);
  }
  return { raw, lines, type, data: data?.join("\n") };
}

/** The same event with its data replaced: every other field line kept, in order. */
function withData(event: SseEvent, data: string): string {
  const kept = event.lines.filter((line) => line !== "data" && !line.startsWith("data:"));
  return `${[...kept, `data: ${data}`].join("\n")}\n\n`;
}

/** A JSON-RPC message as an SSE event, the way MCP servers send them. */
export function messageEvent(json: string): string {
  return `event: message\ndata: ${json}\n\n`;
}

/** A blank line ends an event; a CR at the very end may be the first half of a CRLF, so it waits. */
const EVENT_END = /(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)/g;

export interface McpSseOptions {
  visible: ToolFilter;
  /** Events that go first, before anything of the upstream's (portcullis' answers to refused calls of a batch). */
  prelude?: readonly string[];
  /** An `endpoint` event (the older HTTP+SSE transport): where the client will POST its messages. */
  onEndpoint?(data: string): void;
  /** An event could not be read: the stream has been ended there (fail closed). */
  onUnreadable(reason: string): void;
  /** The stream is over (ended, failed or abandoned). */
  onClosed?(): void;
}

/**
 * An MCP server's event stream on its way to the client (a POST's answer, a GET stream, the
 * older transport's session stream): each event passes on as soon as it is complete, message
 * events with their tools lists filtered; events can be added between the upstream's
 * (`inject`). A message event whose data is not JSON, or an event over 10 MiB, ends the stream.
 * An event cut off by the end of the stream is dropped, as a client would drop it.
 */
export class McpSseFilter extends Transform {
  private readonly decoder = new StringDecoder("utf8");
  private buffer = "";
  private started = false;
  private ended = false;

  constructor(private readonly options: McpSseOptions) {
    super();
    for (const event of options.prelude ?? []) this.push(event);
  }

  /** Sends events of portcullis' own to the client, between two of the upstream's. */
  inject(events: readonly string[]): boolean {
    if (this.ended || this.destroyed) return false;
    for (const event of events) this.push(event);
    return true;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.ended) return callback();
    this.buffer += this.decoder.write(chunk);
    if (!this.started && this.buffer.length > 0) {
      this.started = true;
      // A client drops one leading byte-order mark; so must the reader, or it reads other field names.
      if (this.buffer.startsWith("\uFEFF")) this.buffer = this.buffer.slice(1);
    }
    this.drain(false);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (!this.ended) {
      this.buffer += this.decoder.end();
      this.drain(true);
      this.ended = true;
    }
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.ended = true;
    this.options.onClosed?.();
    callback(error);
  }

  private drain(atEnd: boolean): void {
    let consumed = 0;
    EVENT_END.lastIndex = 0;
    for (let match = EVENT_END.exec(this.buffer); match; match = EVENT_END.exec(this.buffer)) {
      const end = match.index + match[0].length;
      if (!atEnd && end === this.buffer.length && this.buffer.endsWith("\r")) break;
      this.handle(parseEvent(this.buffer.slice(consumed, end)));
      consumed = end;
      if (this.ended) return;
    }
    this.buffer = this.buffer.slice(consumed);
    if (this.buffer.length > MAX_MCP_BODY_BYTES) this.fail("an event larger than 10 MiB");
  }

  private handle(event: SseEvent): void {
    if (event.type === "endpoint" && event.data !== undefined) this.options.onEndpoint?.(event.data);
    const isMessage = event.type === undefined || event.type === "" || event.type === "message";
    if (isMessage && event.data !== undefined && event.data.trim() !== "") {
      let rewritten: string | undefined;
      try {
        rewritten = rewriteAnswer(event.data, this.options.visible);
      } catch (error) {
        if (!(error instanceof NotJsonRpc)) throw error;
        return this.fail("an event whose data is not JSON");
      }
      if (rewritten !== undefined) return void this.push(withData(event, rewritten));
    }
    this.push(event.raw);
  }

  private fail(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.buffer = "";
    this.push(null);
    this.options.onUnreadable(`MCP event stream could not be checked: ${reason}`);
  }
}
