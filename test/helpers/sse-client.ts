import http, { type IncomingMessage } from "node:http";
import { EventEmitter } from "node:events";

export interface SseEvent {
  id?: string;
  event: string;
  data: string;
}

/** A plain server-sent-events client over node:http: parses frames as they arrive. */
export class SseClient extends EventEmitter {
  readonly events: SseEvent[] = [];
  response!: IncomingMessage;
  private buffer = "";
  private req!: http.ClientRequest;

  static open(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
    const client = new SseClient();
    return new Promise((resolve, reject) => {
      client.req = http.get(url, { headers: { accept: "text/event-stream", ...headers } }, (res) => {
        client.response = res;
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => client.feed(chunk));
        res.on("error", () => undefined);
        resolve(client);
      });
      client.req.on("error", reject);
    });
  }

  private feed(chunk: string): void {
    this.buffer += chunk;
    let end: number;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const event: SseEvent = { event: "message", data: "" };
      const data: string[] = [];
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":");
        if (colon === 0) continue;
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") event.id = value;
        else if (field === "event") event.event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length === 0) continue;
      event.data = data.join("\n");
      this.events.push(event);
      this.emit("event", event);
    }
  }

  records(): Array<Record<string, unknown> & { id: number }> {
    return this.events.filter((e) => e.event === "record").map((e) => JSON.parse(e.data));
  }

  waitFor(predicate: (event: SseEvent) => boolean, timeoutMs = 10_000): Promise<SseEvent> {
    const found = this.events.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("event", onEvent);
        reject(new Error(`no matching event within ${timeoutMs} ms; got ${this.events.map((e) => e.event).join(",")}`));
      }, timeoutMs);
      const onEvent = (event: SseEvent) => {
        if (!predicate(event)) return;
        clearTimeout(timer);
        this.off("event", onEvent);
        resolve(event);
      };
      this.on("event", onEvent);
    });
  }

  close(): void {
    this.req.destroy();
  }
}
