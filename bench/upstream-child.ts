// The benchmark's HTTPS upstream, in a process of its own (like a remote server would be).
//   GET /small                 a 64-byte JSON body, keep-alive
//   GET /download?bytes=N      N bytes streamed from one reused buffer (backpressure respected)
//   WebSocket upgrade /echo    ws echo server, no extensions
//   WebSocket upgrade /echo-deflate
//                              the same with permessage-deflate (every message compressed:
//                              threshold 0), when the client offers it
//   POST /mcp                  an MCP server (the official SDK's McpServer, Streamable HTTP,
//                              answers in JSON: enableJsonResponse) with the tools `echo` and
//                              `shell` (the benchmark's mcp rule allows only echo); one SDK
//                              transport per MCP session; GET /mcp (the optional SSE stream) 405
//   POST /v1/messages          an Anthropic-style event stream: one text event at once, more
//                              events SSE_STEP_MS and 2 × SSE_STEP_MS later, then the end
//   POST /bench.Bench/Unary, /bench.Bench/Stream
//                              gRPC (bench/bench.proto) by hand over HTTP/1.1: length-prefixed
//                              messages in a chunked body, grpc-status in the trailers
// That server is HTTP/1.1 only (ALPN http/1.1). Two more ports, both TLS with the same
// certificates:
//   h2Port                     node:http2, h2 only: GET /small and GET /download?bytes=N as above
//   grpcPort                   a grpc-js server for bench.Bench (h2)
// Usage: node --import tsx bench/upstream-child.ts DIR NAME[,NAME...]
// Certificates for every NAME (and 127.0.0.1) are forged before "ready", so that no upstream
// certificate work is ever on the clock.
import { type IncomingMessage, type ServerResponse } from "node:http";
import http2, { type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { createSecureContext, type SecureContext } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { WebSocketServer, type WebSocket } from "ws";
import { z } from "zod";
import { benchFile, BENCH_DOMAIN, serveParent } from "./lib.js";

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
const CHAT_BODY = Buffer.from(
  JSON.stringify({
    id: "chatcmpl-bench",
    object: "chat.completion",
    model: "bench-model",
    choices: [{ index: 0, message: { role: "assistant", content: "hi there" }, finish_reason: "stop" }],
    usage: { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15, prompt_tokens_details: { cached_tokens: 0 } },
  }),
);
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

// gRPC by hand, for the h2 -> HTTP/1.1 path: the messages of bench/bench.proto are small
// enough to encode here (field 1 and 2, wire types 2 and 0).
let grpcCalls = 0;

function varint(value: number): Buffer {
  const bytes: number[] = [];
  while (value > 0x7f) {
    bytes.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 128);
  }
  bytes.push(value);
  return Buffer.from(bytes);
}

/** A gRPC message frame: uncompressed flag, 4-byte length, the message. */
function grpcFrame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** bench.Payload { data } */
function payloadMessage(size: number): Buffer {
  return Buffer.concat([Buffer.from([0x0a]), varint(size), Buffer.alloc(size, 0x62)]);
}

/** bench.StreamRequest { count = 1; size = 2 } from its encoding (varint fields only). */
function decodeStreamRequest(message: Buffer): { count: number; size: number } {
  const fields: Record<number, number> = {};
  let at = 0;
  const readVarint = () => {
    let value = 0;
    let shift = 1;
    for (;;) {
      const byte = message[at++];
      if (byte === undefined) throw new Error("truncated varint");
      value += (byte & 0x7f) * shift;
      if (byte < 0x80) return value;
      shift *= 128;
    }
  };
  while (at < message.length) {
    const tag = readVarint();
    if ((tag & 7) !== 0) throw new Error(`unexpected wire type in StreamRequest (tag ${tag})`);
    fields[tag >> 3] = readVarint();
  }
  return { count: fields[1] ?? 0, size: fields[2] ?? 0 };
}

function grpcOverHttp1(req: IncomingMessage, res: ServerResponse, method: "Unary" | "Stream"): void {
  grpcCalls++;
  const parts: Buffer[] = [];
  req.on("data", (chunk: Buffer) => parts.push(chunk));
  req.once("end", () => {
    const body = Buffer.concat(parts);
    const finish = (status: number, message = "") => {
      res.addTrailers({ "grpc-status": String(status), ...(message ? { "grpc-message": encodeURIComponent(message) } : {}) });
      res.end();
    };
    res.writeHead(200, { "content-type": "application/grpc", trailer: "grpc-status, grpc-message" });
    if (body.length < 5 || body.readUInt32BE(1) !== body.length - 5) return finish(13, "expected exactly one uncompressed message");
    if (method === "Unary") {
      res.write(body); // bench.Payload in, the same bench.Payload out
      return finish(0);
    }
    let request: { count: number; size: number };
    try {
      request = decodeStreamRequest(body.subarray(5));
    } catch (error) {
      return finish(13, (error as Error).message);
    }
    const frame = grpcFrame(payloadMessage(request.size));
    let left = request.count;
    const pump = (): void => {
      while (left > 0) {
        if (res.destroyed) return;
        left--;
        if (!res.write(frame)) {
          res.once("drain", pump);
          return;
        }
      }
      finish(0);
    };
    pump();
  });
}

// ---------------------------------------------------------------------------------------------
// MCP: the SDK's server, one StreamableHTTPServerTransport per session (as its docs set it up).

let mcpToolCalls = 0;
/** Calls of `shell` that ran: the denied-tool check must leave this at 0. */
let mcpShellCalls = 0;
const mcpSessions = new Map<string, StreamableHTTPServerTransport>();

function makeMcpServer(): McpServer {
  const server = new McpServer({ name: "bench-mcp", version: "1.0.0" });
  server.registerTool("echo", { description: "returns its text", inputSchema: { text: z.string() } }, async ({ text }: { text: string }) => {
    mcpToolCalls++;
    return { content: [{ type: "text" as const, text }] };
  });
  // Not in the benchmark rule's allow_tools: a call must never reach this handler through portcullis+mcp.
  server.registerTool("shell", { description: "runs a command", inputSchema: { command: z.string() } }, async () => {
    mcpShellCalls++;
    return { content: [{ type: "text" as const, text: "shell ran" }] };
  });
  return server;
}

async function mcp(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method === "GET") {
    // The optional server-to-client SSE stream: not offered (the client then does without it).
    req.resume();
    res.writeHead(405, { allow: "POST, DELETE" }).end();
    return;
  }
  const sid = req.headers["mcp-session-id"];
  let transport = typeof sid === "string" ? mcpSessions.get(sid) : undefined;
  if (!transport) {
    if (sid !== undefined) {
      req.resume();
      res.writeHead(404).end("unknown session");
      return;
    }
    const created: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: true,
      onsessioninitialized: (id) => void mcpSessions.set(id, created),
    });
    created.onclose = () => {
      if (created.sessionId) mcpSessions.delete(created.sessionId);
    };
    await makeMcpServer().connect(created);
    transport = created;
  }
  await transport.handleRequest(req, res);
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  requests++;
  const url = new URL(req.url ?? "/", "https://upstream");
  if (url.pathname === "/mcp") {
    mcp(req, res).catch((error: Error) => {
      if (!res.headersSent) res.writeHead(500).end(error.message);
      else res.destroy();
    });
    return;
  }
  if (req.method === "POST" && (url.pathname === "/bench.Bench/Unary" || url.pathname === "/bench.Bench/Stream")) {
    grpcOverHttp1(req, res, url.pathname === "/bench.Bench/Unary" ? "Unary" : "Stream");
    return;
  }
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
  if (req.method === "POST" && url.pathname === "/v1/chat/completions") {
    // A small non-streamed Chat Completions answer with its usage (bench/budgets.ts).
    req.resume();
    req.once("end", () => res.writeHead(200, { "content-type": "application/json", "content-length": String(CHAT_BODY.length) }).end(CHAT_BODY));
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
/** TLS connections accepted so far, per server: how well the proxies pool their upstream connections. */
const tlsConnections = { http1: 0, h2: 0 };
server.on("secureConnection", (socket: Socket) => {
  tlsConnections.http1++;
  sockets.add(socket);
  socket.once("close", () => sockets.delete(socket));
});

// Two echo servers on the one HTTPS server: /echo-deflate with permessage-deflate, any other path without.
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const wssDeflate = new WebSocketServer({ noServer: true, perMessageDeflate: { threshold: 0 } });
let wsSessions = 0;
const echo = (ws: WebSocket) => {
  wsSessions++;
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on("error", () => ws.terminate());
};
wss.on("connection", echo);
wssDeflate.on("connection", echo);
server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
  const target = (req.url ?? "").startsWith("/echo-deflate") ? wssDeflate : wss;
  target.handleUpgrade(req, socket, head, (ws) => target.emit("connection", ws, req));
});

await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));

// ---------------------------------------------------------------------------------------------
// The h2 upstream: node:http2's stream API (what an h2 server written for speed uses), h2 only.

let h2Requests = 0;
function h2Download(stream: ServerHttp2Stream, total: number): void {
  stream.respond({ ":status": 200, "content-type": "application/octet-stream", "content-length": String(total) });
  let left = total;
  const pump = (): void => {
    while (left > 0) {
      if (stream.destroyed) return;
      const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
      left -= chunk.length;
      if (!stream.write(chunk)) {
        stream.once("drain", pump);
        return;
      }
    }
    stream.end();
  };
  pump();
}

const h2Server = http2.createSecureServer({
  key: ca.leafKey.pem,
  cert: ipCert,
  SNICallback: (servername, callback) => callback(null, contexts.get(servername.toLowerCase())),
  allowHTTP1: false,
});
const h2Sessions = new Set<ServerHttp2Session>();
h2Server.on("session", (session: ServerHttp2Session) => {
  tlsConnections.h2++;
  h2Sessions.add(session);
  session.once("close", () => h2Sessions.delete(session));
  session.on("error", () => session.destroy());
});
h2Server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
  h2Requests++;
  stream.on("error", () => undefined);
  // Read the request side to its end, as a server does. Left unread, node:http2 closes a finished
  // response with RST_STREAM(NO_ERROR) as soon as its last write is handed over, which can
  // overtake DATA frames still waiting for the client's flow-control window: Go's client then
  // sees the download cut short ("stream error: NO_ERROR; received from peer").
  stream.resume();
  const url = new URL(String(headers[":path"] ?? "/"), "https://upstream");
  const method = headers[":method"];
  if (method === "GET" && url.pathname === "/small") {
    stream.respond({ ":status": 200, "content-type": "application/json", "content-length": String(SMALL_BODY.length) });
    stream.end(SMALL_BODY);
    return;
  }
  if (method === "GET" && url.pathname === "/download") {
    const bytes = Number(url.searchParams.get("bytes") ?? 0);
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > 1024 ** 3) {
      stream.respond({ ":status": 400 });
      stream.end("bad bytes");
      return;
    }
    h2Download(stream, bytes);
    return;
  }
  stream.respond({ ":status": 404, "content-type": "text/plain" });
  stream.end("no such page");
});
await new Promise<void>((resolve) => h2Server.listen(0, "127.0.0.1", resolve));

// ---------------------------------------------------------------------------------------------
// The gRPC upstream: grpc-js, bench/bench.proto, a certificate for bench.test.

interface Payload {
  data: Buffer;
}
interface StreamRequest {
  count: number;
  size: number;
}
const definition = protoLoader.loadSync(benchFile("bench.proto"), { keepCase: true, longs: Number, defaults: true });
const { bench } = grpc.loadPackageDefinition(definition) as unknown as { bench: { Bench: grpc.ServiceClientConstructor } };
const grpcServer = new grpc.Server();
grpcServer.addService(bench.Bench.service, {
  Unary: ((call, callback) => {
    grpcCalls++;
    callback(null, { data: call.request.data });
  }) satisfies grpc.handleUnaryCall<Payload, Payload>,
  Stream: ((call) => {
    grpcCalls++;
    const message = { data: Buffer.alloc(call.request.size, 0x62) };
    let left = call.request.count;
    const pump = (): void => {
      while (left > 0) {
        if (call.cancelled) return;
        left--;
        if (!call.write(message)) {
          call.once("drain", pump);
          return;
        }
      }
      call.end();
    };
    pump();
  }) satisfies grpc.handleServerStreamingCall<StreamRequest, Payload>,
});
const grpcCert = await forgeLeafCertificate(ca, BENCH_DOMAIN);
const grpcPort = await new Promise<number>((resolve, reject) =>
  grpcServer.bindAsync(
    "127.0.0.1:0",
    grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(ca.leafKey.pem), cert_chain: Buffer.from(grpcCert) }], false),
    (error, port) => (error ? reject(error) : resolve(port)),
  ),
);

serveParent(
  {
    type: "ready",
    port: (server.address() as AddressInfo).port,
    h2Port: (h2Server.address() as AddressInfo).port,
    grpcPort,
    caFile: join(dir, "ca.pem"),
    caPem: ca.certPem,
    sseBody: SSE_BODY,
  },
  { stats: () => ({ type: "stats", requests, h2Requests, grpcCalls, wsSessions, mcpToolCalls, mcpShellCalls, openSockets: sockets.size, tlsConnections: { ...tlsConnections } }) },
  async () => {
    for (const transport of mcpSessions.values()) await transport.close().catch(() => undefined);
    for (const ws of [...wss.clients, ...wssDeflate.clients]) ws.terminate();
    await Promise.all([wss, wssDeflate].map((ws) => new Promise<void>((resolve) => ws.close(() => resolve()))));
    for (const socket of sockets) socket.destroy();
    server.closeAllConnections();
    for (const session of h2Sessions) session.destroy();
    grpcServer.forceShutdown();
    await Promise.all([
      new Promise<void>((resolve) => server.close(() => resolve())),
      new Promise<void>((resolve) => h2Server.close(() => resolve())),
    ]);
  },
);
