import http, { type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { EventEmitter } from "node:events";

type AnyValue = { stringValue?: string; intValue?: number | string; doubleValue?: number; boolValue?: boolean; arrayValue?: { values: AnyValue[] } };
interface KeyValue {
  key: string;
  value: AnyValue;
}
interface OtlpSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: KeyValue[];
  status?: { code?: number; message?: string };
}

export interface ReceivedSpan {
  name: string;
  kind: number;
  startMs: number;
  endMs: number;
  attributes: Record<string, unknown>;
  status: { code: number; message?: string };
  service: unknown;
}

function plain(value: AnyValue): unknown {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.arrayValue) return value.arrayValue.values.map(plain);
  return undefined;
}

const attributes = (list: KeyValue[] = []) => Object.fromEntries(list.map((kv) => [kv.key, plain(kv.value)]));

/** A local OTLP/HTTP collector (JSON encoding): POST /v1/traces, spans decoded as the protocol defines them. */
export class OtlpReceiver extends EventEmitter {
  readonly spans: ReceivedSpan[] = [];
  /** Every request body as received, to search for what must never be there. */
  readonly bodies: string[] = [];
  readonly contentTypes: string[] = [];
  private server!: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        if (req.method !== "POST" || req.url !== "/v1/traces") return void res.writeHead(404).end();
        const text = Buffer.concat(chunks).toString("utf8");
        this.bodies.push(text);
        this.contentTypes.push(String(req.headers["content-type"]));
        const body = JSON.parse(text) as { resourceSpans: { resource: { attributes: KeyValue[] }; scopeSpans: { spans: OtlpSpan[] }[] }[] };
        for (const resourceSpans of body.resourceSpans) {
          const service = attributes(resourceSpans.resource.attributes)["service.name"];
          for (const scope of resourceSpans.scopeSpans) {
            for (const span of scope.spans) {
              const received: ReceivedSpan = {
                name: span.name,
                kind: span.kind,
                startMs: Number(BigInt(span.startTimeUnixNano) / 1000n) / 1000,
                endMs: Number(BigInt(span.endTimeUnixNano) / 1000n) / 1000,
                attributes: attributes(span.attributes),
                status: { code: span.status?.code ?? 0, message: span.status?.message },
                service,
              };
              this.spans.push(received);
              this.emit("span", received);
            }
          }
        }
        res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
      });
    });
    this.server.on("connection", (socket: Socket) => {
      this.sockets.add(socket);
      socket.once("close", () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  waitFor(predicate: (span: ReceivedSpan) => boolean, timeoutMs = 15_000): Promise<ReceivedSpan> {
    const found = this.spans.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("span", onSpan);
        reject(new Error(`no matching span within ${timeoutMs} ms; got ${JSON.stringify(this.spans.map((s) => s.name))}`));
      }, timeoutMs);
      const onSpan = (span: ReceivedSpan) => {
        if (!predicate(span)) return;
        clearTimeout(timer);
        this.off("span", onSpan);
        resolve(span);
      };
      this.on("span", onSpan);
    });
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** A port nothing listens on: bound by listen(0), then released. */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
