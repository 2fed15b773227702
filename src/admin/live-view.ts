import type { IncomingMessage, ServerResponse } from "node:http";
import type { PublishedRecord } from "../log/audit-feed.js";

/** What the live view shows of an audit record: its fields less the request headers and body sample. */
export type LiveEntry = Omit<PublishedRecord, "req_headers" | "req_body" | "level"> & { id: number; level: number };

export interface OpenCounts {
  tunnels: number;
  websockets: number;
}

export interface LiveViewOptions {
  /** Records kept for a page that joins late (and for one that reconnects). */
  ringSize?: number;
  /** Bytes a slow page may leave unread before it is dropped; its EventSource reconnects and catches up from the ring. */
  maxBacklogBytes?: number;
  /** Distinct clients and hosts counted by name; the rest are counted as "_other". */
  maxCounterKeys?: number;
  statsIntervalMs?: number;
  openCounts: () => Promise<OpenCounts>;
}

interface Tally {
  total: number;
  denied: number;
  errors: number;
}

class Tallies {
  private readonly byKey = new Map<string, Tally>();

  constructor(private readonly maxKeys: number) {}

  count(key: string, record: PublishedRecord): void {
    const slot = this.byKey.has(key) || this.byKey.size < this.maxKeys ? key : "_other";
    let tally = this.byKey.get(slot);
    if (!tally) this.byKey.set(slot, (tally = { total: 0, denied: 0, errors: 0 }));
    tally.total++;
    if (record.decision === "deny") tally.denied++;
    if ((record.status ?? 0) >= 500 || record.level >= 50) tally.errors++;
  }

  top(limit: number): Array<{ name: string } & Tally> {
    return [...this.byKey]
      .map(([name, tally]) => ({ name, ...tally }))
      .sort((a, b) => b.total - a.total)
      .slice(0, limit);
  }
}

function liveEntry(id: number, record: PublishedRecord): LiveEntry {
  const { req_headers: _headers, req_body: _body, ...shown } = record;
  return { ...shown, id };
}

/**
 * The live stream behind /ui: a ring of the latest records, per-client and per-host counters,
 * and the server-sent-event connections of open pages. Memory is bounded: the ring is fixed,
 * counters cap their keys, and a page that stops reading is dropped instead of buffered for.
 */
export class LiveView {
  private readonly ring: LiveEntry[] = [];
  private readonly ringSize: number;
  private readonly maxBacklogBytes: number;
  private readonly clients = new Set<ServerResponse>();
  private readonly byClient: Tallies;
  private readonly byHost: Tallies;
  private nextId = 1;
  private total = 0;
  private dropped = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: LiveViewOptions) {
    this.ringSize = options.ringSize ?? 500;
    this.maxBacklogBytes = options.maxBacklogBytes ?? 256 * 1024;
    this.byClient = new Tallies(options.maxCounterKeys ?? 200);
    this.byHost = new Tallies(options.maxCounterKeys ?? 200);
  }

  get pages(): number {
    return this.clients.size;
  }

  /** Pages dropped for reading too slowly, since start. */
  get droppedPages(): number {
    return this.dropped;
  }

  add(record: PublishedRecord): void {
    const entry = liveEntry(this.nextId++, record);
    this.ring.push(entry);
    if (this.ring.length > this.ringSize) this.ring.shift();
    this.total++;
    this.byClient.count(record.client ?? "-", record);
    this.byHost.count(record.host || "-", record);
    if (this.clients.size === 0) return;
    const frame = `id: ${entry.id}\nevent: record\ndata: ${JSON.stringify(entry)}\n\n`;
    for (const res of this.clients) this.send(res, frame);
  }

  /** Serves one page's event stream: the ring after Last-Event-ID, then every new record and the counters. */
  attach(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      "X-Content-Type-Options": "nosniff",
      Connection: "keep-alive",
    });
    const after = Number(req.headers["last-event-id"] ?? 0) || 0;
    // A Last-Event-ID from before a restart is larger than anything here: replay everything then.
    const replay = after < this.nextId ? this.ring.filter((entry) => entry.id > after) : this.ring;
    res.write(`retry: 2000\n\n${replay.map((entry) => `id: ${entry.id}\nevent: record\ndata: ${JSON.stringify(entry)}\n\n`).join("")}`);
    this.clients.add(res);
    res.once("close", () => {
      this.clients.delete(res);
      if (this.clients.size === 0) this.stopStats();
    });
    void this.sendStats([res]);
    this.startStats();
  }

  async stats(): Promise<Record<string, unknown>> {
    const open = await this.options.openCounts().catch(() => ({ tunnels: null, websockets: null }));
    return { total: this.total, open_tunnels: open.tunnels, open_websockets: open.websockets, clients: this.byClient.top(50), hosts: this.byHost.top(50), pages: this.clients.size };
  }

  close(): void {
    this.stopStats();
    for (const res of this.clients) res.end();
    this.clients.clear();
  }

  private send(res: ServerResponse, frame: string): void {
    if (res.writableLength > this.maxBacklogBytes) {
      this.clients.delete(res);
      this.dropped++;
      res.destroy();
      return;
    }
    res.write(frame);
  }

  private async sendStats(targets: Iterable<ServerResponse>): Promise<void> {
    const frame = `event: stats\ndata: ${JSON.stringify(await this.stats())}\n\n`;
    for (const res of targets) if (!res.destroyed) this.send(res, frame);
  }

  private startStats(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.sendStats([...this.clients]), this.options.statsIntervalMs ?? 2_000);
    this.timer.unref();
  }

  private stopStats(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
