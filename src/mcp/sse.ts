import { Transform, type TransformCallback } from "node:stream";
import { SseText, takeSseEvents, type SseEvent } from "../core/sse.js";
import { rewriteAnswer, type ToolFilter } from "./answers.js";
import { MAX_MCP_BODY_BYTES, NotJsonRpc } from "./jsonrpc.js";

/** The same event with its data replaced: every other field line kept, in order. */
function withData(event: SseEvent, data: string): string {
  const kept = event.lines.filter((line) => line !== "data" && !line.startsWith("data:"));
  return `${[...kept, `data: ${data}`].join("\n")}\n\n`;
}

/** A JSON-RPC message as an SSE event, the way MCP servers send them. */
export function messageEvent(json: string): string {
  return `event: message\ndata: ${json}\n\n`;
}

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
  private readonly text = new SseText();
  private buffer = "";
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
    this.buffer += this.text.next(chunk);
    this.drain(false);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (!this.ended) {
      this.buffer += this.text.end();
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
    this.buffer = takeSseEvents(this.buffer, atEnd, (event) => {
      this.handle(event);
      return !this.ended;
    });
    if (this.ended) return;
    if (this.buffer.length > MAX_MCP_BODY_BYTES) this.fail("an event larger than 10 MiB");
  }

  private handle(event: SseEvent): void {
    if (event.event === "endpoint" && event.data !== undefined) this.options.onEndpoint?.(event.data);
    const isMessage = event.event === undefined || event.event === "" || event.event === "message";
    if (isMessage && event.data !== undefined && event.data.trim() !== "") {
      let rewritten: string | undefined;
      try {
        rewritten = rewriteAnswer(event.data, this.options.visible);
      } catch (error) {
        return this.fail(error instanceof NotJsonRpc ? "an event whose data is not JSON" : `an event that could not be read (${(error as Error).message})`);
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
