// The benchmark's HTTPS upstream, in a process of its own (like a remote server would be).
//   GET /small                 a 64-byte JSON body, keep-alive
//   GET /download?bytes=N      N bytes streamed from one reused buffer (backpressure respected)
//   WebSocket upgrade /echo    ws echo server
//   POST /v1/messages          an Anthropic-style event stream: one text event at once, more
//                              events SSE_STEP_MS and 2 × SSE_STEP_MS later, then the end
// Usage: node --import tsx bench/upstream-child.ts DIR NAME[,NAME...]
// Certificates for every NAME (and 127.0.0.1) are forged before "ready", so that no upstream
// certificate work is ever on the clock.
import { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import { createSecureContext, type SecureContext } from "node:tls";
import { WebSocketServer } from "ws";
import { serveParent } from "./lib.js";

// portcullis' own CA code, from the build (dist/) like every other portcullis import in bench/;
// typed from src/, so type-checking bench/ needs no build.
const { initCa, loadCa } = (await import(new URL("../dist/ca/authority.js", import.meta.url).href)) as typeof import("../src/ca/authority.js");
const { forgeLeafCertificate } = (await import(new URL("../dist/ca/forge-leaf.js", import.meta.url).href)) as typeof import("../src/ca/forge-leaf.js");

const [dir, namesArg] = process.argv.slice(2);
if (!dir || !namesArg) throw new Error("usage: upstream-child.ts DIR NAME[,NAME...]");

await initCa(dir, { commonName: "portcullis bench upstream CA" });
const ca = await loadCa(dir);
const contexts = new Map<string, SecureContext>();
for (const name of namesArg.split(",")) {
  contexts.set(name, createSecureContext({ key: ca.leafKey.pem, cert: await forgeLeafCertificate(ca, name) }));
}
const ipCert = await forgeLeafCertificate(ca, "127.0.0.1");

// {"ok":true,"pad":"…"} is 20 bytes around the padding: 64 bytes in all.
const SMALL_BODY = Buffer.from(JSON.stringify({ ok: true, pad: "x".repeat(64 - 20) }));
const CHUNK = Buffer.alloc(256 * 1024, 0x61);
let requests = 0;

// The streamed LLM answer. The first write is exactly one text event, so the client's "first
// text token" is the first thing on the wire; the rest follows on timers, as a model would.
const SSE_STEP_MS = 5;
const sse = (type: string, data: Record<string, unknown>) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
const SSE_PARTS = [
  sse("content_block_delta", { index: 0, delta: { type: "text_delta", text: "hi" } }),
  sse("content_block_delta", { index: 0, delta: { type: "text_delta", text: " there" } }) +
    sse("content_block_delta", { index: 0, delta: { type: "text_delta", text: ", how can I help?" } }),
  sse("content_block_stop", { index: 0 }) +
    sse("message_delta", { delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 8 } }) +
    sse("message_stop", {}),
];
const SSE_BODY = SSE_PARTS.join("");
// POST /v1/messages?tool=rm: a tool call the benchmark's llm rule denies, all in one write. Not
// timed; run.ts uses it once to check that the stream really goes through the SSE guard.
const SSE_DENIED =
  sse("content_block_start", { index: 0, content_block: { type: "tool_use", id: "toolu_bench", name: "bash", input: {} } }) +
  sse("content_block_delta", { index: 0, delta: { type: "input_json_delta", partial_json: JSON.stringify({ command: "rm -rf /tmp/bench" }) } }) +
  sse("content_block_stop", { index: 0 }) +
  sse("message_stop", {});

function stream(req: IncomingMessage, res: ServerResponse, denied: boolean): void {
  // Read the whole request first, as an API server would; then answer.
  req.resume();
  req.once("end", () => {
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    if (denied) {
      res.end(SSE_DENIED);
      return;
    }
    res.write(SSE_PARTS[0]);
    let step = 1;
    const timer = setInterval(() => {
      if (res.destroyed) return clearInterval(timer);
      res.write(SSE_PARTS[step]);
      if (++step === SSE_PARTS.length) {
        clearInterval(timer);
        res.end();
      }
    }, SSE_STEP_MS);
    res.once("close", () => clearInterval(timer));
  });
}

function download(res: ServerResponse, total: number): void {
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(total) });
  let left = total;
  const pump = (): void => {
    while (left > 0) {
      if (res.destroyed) return;
      const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
      left -= chunk.length;
      if (!res.write(chunk)) {
        res.once("drain", pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  requests++;
  const url = new URL(req.url ?? "/", "https://upstream");
  if (req.method === "GET" && url.pathname === "/small") {
    res.writeHead(200, { "content-type": "application/json", "content-length": String(SMALL_BODY.length) });
    res.end(SMALL_BODY);
    return;
  }
  if (req.method === "GET" && url.pathname === "/download") {
    const bytes = Number(url.searchParams.get("bytes") ?? 0);
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > 1024 ** 3) {
      res.writeHead(400).end("bad bytes");
      return;
    }
    download(res, bytes);
    return;
  }
  if (req.method === "POST" && url.pathname === "/v1/messages") {
    stream(req, res, url.searchParams.get("tool") === "rm");
    return;
  }
  res.writeHead(404, { "content-type": "text/plain" }).end("no such page");
}

const server = https.createServer(
  {
    key: ca.leafKey.pem,
    cert: ipCert,
    SNICallback: (servername, callback) => callback(null, contexts.get(servername.toLowerCase())),
    noDelay: true,
    keepAlive: true,
  },
  handle,
);
server.keepAliveTimeout = 120_000;
server.requestTimeout = 0;
const sockets = new Set<Socket>();
server.on("secureConnection", (socket: Socket) => {
  sockets.add(socket);
  socket.once("close", () => sockets.delete(socket));
});

const wss = new WebSocketServer({ server, perMessageDeflate: false });
let wsSessions = 0;
wss.on("connection", (ws) => {
  wsSessions++;
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on("error", () => ws.terminate());
});

await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));

serveParent(
  { type: "ready", port: (server.address() as AddressInfo).port, caFile: join(dir, "ca.pem"), caPem: ca.certPem, sseBody: SSE_BODY },
  { stats: () => ({ type: "stats", requests, wsSessions, openSockets: sockets.size }) },
  async () => {
    for (const client of wss.clients) client.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  },
);
