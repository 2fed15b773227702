import http, { type IncomingMessage, type RequestListener, type Server, type ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { WebSocketServer, type ServerOptions as WebSocketServerOptions } from "ws";
import type { ServerPki } from "./pki.js";

export interface TestUpstream {
  server: Server;
  port: number;
  /** Every request the upstream saw, with raw headers. */
  seen: { method: string; url: string; rawHeaders: string[] }[];
  close(): Promise<void>;
}

/** Closes a server and every connection it still holds. */
export function closeServer(server: Server, sockets: Set<Socket>): Promise<void> {
  for (const socket of sockets) socket.destroy();
  server.closeAllConnections?.();
  return new Promise((resolve) => server.close(() => resolve()));
}

function track(server: Server): Set<Socket> {
  const sockets = new Set<Socket>();
  const add = (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };
  server.on("connection", add);
  server.on("secureConnection", add);
  return sockets;
}

/**
 * Answers with `total` bytes of `fill` as a Content-Length body, 64 KiB a write, waiting for
 * 'drain' as a server should: a body larger than anything the test process keeps in memory.
 */
export function sendBytes(res: ServerResponse, total: number, fill = 7): void {
  const block = Buffer.alloc(64 * 1024, fill);
  res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": String(total) });
  let left = total;
  const more = () => {
    while (left > 0) {
      const chunk = left >= block.length ? block : block.subarray(0, left);
      left -= chunk.length;
      if (!res.write(chunk)) return void res.once("drain", more);
    }
    res.end();
  };
  more();
}

/** A real HTTPS (or HTTP) server on 127.0.0.1:0. */
export async function startUpstream(handler: RequestListener, pki?: ServerPki): Promise<TestUpstream> {
  const seen: TestUpstream["seen"] = [];
  const wrapped = (req: IncomingMessage, res: ServerResponse) => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", rawHeaders: req.rawHeaders });
    handler(req, res);
  };
  const server = pki
    ? https.createServer({ key: pki.key, cert: pki.ipCert, SNICallback: pki.sniCallback }, wrapped)
    : http.createServer(wrapped);
  const sockets = track(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port, seen, close: () => closeServer(server, sockets) };
}

export interface TestWsUpstream extends TestUpstream {
  wss: WebSocketServer;
}

/** An HTTPS server with a ws WebSocketServer on it (echo by default). */
export async function startWsUpstream(pki: ServerPki, options: Partial<WebSocketServerOptions> = {}, echo = true): Promise<TestWsUpstream> {
  const upstream = await startUpstream((_req, res) => res.writeHead(404).end("no such page"), pki);
  const wss = new WebSocketServer({ server: upstream.server, ...options });
  upstream.server.on("upgrade", (req: IncomingMessage) => upstream.seen.push({ method: req.method ?? "", url: req.url ?? "", rawHeaders: req.rawHeaders }));
  if (echo) wss.on("connection", (ws) => ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary })));
  const close = upstream.close;
  return {
    ...upstream,
    wss,
    close: async () => {
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await close();
    },
  };
}
