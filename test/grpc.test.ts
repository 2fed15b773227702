import { EventEmitter, once } from "node:events";
import type { IncomingMessage } from "node:http";
import https from "node:https";
import { connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCa } from "../src/ca/authority.js";
import { forgeLeafCertificate } from "../src/ca/forge-leaf.js";
import { makeUpstreamPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type AuditLine, type TestProxy } from "./helpers/proxy.js";

/*
 * gRPC end to end through portcullis (SPEC §7): a real grpc-js client finds portcullis the way
 * it does in real life (the grpc_proxy variable: HTTP CONNECT, then TLS inside the tunnel) and
 * talks to a real grpc-js server (h2 only, TLS from its own CA). The client trusts only
 * portcullis' CA, so no call can succeed around portcullis; every call is also matched to the
 * audit line portcullis wrote for it (by X-Request-Id, which portcullis takes from the client).
 */

interface EchoRequest {
  message: string;
  count: number;
  payload: Buffer;
}

interface EchoReply {
  message: string;
  index: number;
  payload: Buffer;
}

/** The generated client, typed for what the tests call. */
interface EchoClient extends grpc.Client {
  Unary(request: Partial<EchoRequest>, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<EchoReply>): grpc.ClientUnaryCall;
  Fail(request: Partial<EchoRequest>, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<EchoReply>): grpc.ClientUnaryCall;
  Slow(request: Partial<EchoRequest>, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<EchoReply>): grpc.ClientUnaryCall;
  ServerStream(request: Partial<EchoRequest>, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<EchoReply>;
  Endless(request: Partial<EchoRequest>, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<EchoReply>;
  ClientStream(metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<EchoReply>): grpc.ClientWritableStream<Partial<EchoRequest>>;
  Bidi(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<Partial<EchoRequest>, EchoReply>;
}

const PROTO = fileURLToPath(new URL("./fixtures/echo.proto", import.meta.url));
const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true });
const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  pcx: { echo: { Echo: grpc.ServiceClientConstructor } };
};
const Echo = loaded.pcx.echo.Echo;
const SERVICE = "/pcx.echo.Echo";

/** What the upstream saw of each call, by the x-request-id the test gave it. */
interface Seen {
  method: string;
  metadata: grpc.Metadata;
  deadline: grpc.Deadline;
}
const seen = new Map<string, Seen>();
/** What the upstream's handlers report, with the call's x-request-id: "received", "cancelled". */
const serverEvents = new EventEmitter();

function record(method: string, call: { metadata: grpc.Metadata; getDeadline(): grpc.Deadline }): string {
  const id = String(call.metadata.get("x-request-id")[0] ?? "");
  seen.set(id, { method, metadata: call.metadata.clone(), deadline: call.getDeadline() });
  serverEvents.emit("received", id);
  return id;
}

/** Resolves when the upstream reports `event` for the call `id` (listen before starting the call). */
function serverEvent(event: "received" | "cancelled", id: string): Promise<void> {
  return new Promise((resolve) => {
    const listener = (eventId: string) => {
      if (eventId !== id) return;
      serverEvents.off(event, listener);
      resolve();
    };
    serverEvents.on(event, listener);
  });
}

function metadataOf(entries: Record<string, string | Buffer>): grpc.Metadata {
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(entries)) metadata.set(key, value);
  return metadata;
}

const implementation: grpc.UntypedServiceImplementation = {
  Unary: ((call, callback) => {
    record("Unary", call);
    call.sendMetadata(metadataOf({ "x-initial": "from-upstream", "x-initial-bin": Buffer.from([0xde, 0xad]) }));
    const { message, payload } = call.request;
    callback(null, { message: `echo: ${message}`, index: 0, payload }, metadataOf({ "x-trailing": "bye", "x-trailing-bin": Buffer.from([0, 1, 2, 255]) }));
  }) satisfies grpc.handleUnaryCall<EchoRequest, EchoReply>,

  ServerStream: ((call) => {
    record("ServerStream", call);
    for (let index = 0; index < call.request.count; index++) call.write({ message: `${call.request.message} #${index}`, index, payload: call.request.payload });
    call.end(metadataOf({ "x-trailing": "stream-done" }));
  }) satisfies grpc.handleServerStreamingCall<EchoRequest, EchoReply>,

  ClientStream: ((call, callback) => {
    record("ClientStream", call);
    const parts: string[] = [];
    let bytes = 0;
    call.on("data", (request: EchoRequest) => {
      parts.push(request.message);
      bytes += request.payload.length;
    });
    call.on("end", () => callback(null, { message: parts.join(","), index: parts.length, payload: Buffer.from(String(bytes)) }));
  }) satisfies grpc.handleClientStreamingCall<EchoRequest, EchoReply>,

  Bidi: ((call) => {
    record("Bidi", call);
    let index = 0;
    call.on("data", (request: EchoRequest) => call.write({ message: request.message.toUpperCase(), index: index++, payload: Buffer.alloc(0) }));
    call.on("end", () => call.end());
  }) satisfies grpc.handleBidiStreamingCall<EchoRequest, EchoReply>,

  Fail: ((call, callback) => {
    record("Fail", call);
    const trailing = metadataOf({ "x-why": "no-such-echo" });
    // grpc-js answers trailers-only (one HEADERS frame with END_STREAM) unless headers went first.
    if (call.request.message === "after-headers") call.sendMetadata(metadataOf({ "x-initial": "before-the-error" }));
    callback({ code: grpc.status.NOT_FOUND, details: `no echo named ${call.request.message}`, metadata: trailing });
  }) satisfies grpc.handleUnaryCall<EchoRequest, EchoReply>,

  // Never answers: the call ends at its deadline (the client's, which the upstream also enforces).
  Slow: ((call) => {
    const id = record("Slow", call);
    call.on("cancelled", () => serverEvents.emit("cancelled", id));
  }) satisfies grpc.handleUnaryCall<EchoRequest, EchoReply>,

  Endless: ((call) => {
    const id = record("Endless", call);
    call.on("cancelled", () => serverEvents.emit("cancelled", id));
    call.write({ message: "first", index: 0, payload: Buffer.alloc(0) });
  }) satisfies grpc.handleServerStreamingCall<EchoRequest, EchoReply>,
};

let upstream: grpc.Server;
let upstreamPort: number;
let proxy: TestProxy;
let client: EchoClient;
const clients: grpc.Client[] = [];
const PROXY_ENV = ["grpc_proxy", "https_proxy", "http_proxy", "no_grpc_proxy", "no_proxy"] as const;
const savedEnv = new Map<string, string | undefined>();

/** A client channel as an application makes it: the proxy comes from the environment at creation. */
function newClient(options: grpc.ChannelOptions = {}): EchoClient {
  const created = new Echo(`localhost:${upstreamPort}`, grpc.credentials.createSsl(Buffer.from(proxy.caPem)), options) as unknown as EchoClient;
  clients.push(created);
  return created;
}

beforeAll(async () => {
  const pki = await makeUpstreamPki("grpc-upstream");
  const ca = await loadCa(pki.dir);
  const cert = await forgeLeafCertificate(ca, "localhost");
  upstream = new grpc.Server();
  upstream.addService(Echo.service, implementation);
  upstreamPort = await new Promise<number>((resolve, reject) =>
    upstream.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(ca.leafKey.pem), cert_chain: Buffer.from(cert) }], false), (error, port) =>
      error ? reject(error) : resolve(port),
    ),
  );
  proxy = await startProxy(policyTrusting(pki.caFile));
  for (const name of PROXY_ENV) savedEnv.set(name, process.env[name]);
  // Nothing in the environment may route localhost around the proxy (grpc-js honours no_proxy).
  for (const name of PROXY_ENV) delete process.env[name];
  process.env.grpc_proxy = proxy.url;
  client = newClient();
});

afterAll(async () => {
  for (const created of clients) created.close();
  for (const [name, value] of savedEnv) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  upstream?.forceShutdown();
  await proxy?.close();
});

let counter = 0;
function requestId(label: string): string {
  return `grpc-${label}-${++counter}`;
}

/** The audit line portcullis wrote for the exchange with this request id. */
function auditFor(id: string): Promise<AuditLine> {
  return proxy.audit.waitFor((line) => line.msg === "http" && line.req_id === id);
}

interface UnaryResult {
  error: grpc.ServiceError | null;
  reply: EchoReply | undefined;
  /** Initial metadata (response headers), if any came. */
  metadata: grpc.Metadata | undefined;
  status: grpc.StatusObject;
}

type UnaryMethod = "Unary" | "Fail" | "Slow";

/** One unary call: its reply or error, and the metadata and status events the call emitted. */
async function callUnary(method: UnaryMethod, request: Partial<EchoRequest>, metadata: grpc.Metadata, options: grpc.CallOptions = {}): Promise<UnaryResult> {
  let metadataSeen: grpc.Metadata | undefined;
  let call!: grpc.ClientUnaryCall;
  const answered = new Promise<{ error: grpc.ServiceError | null; reply: EchoReply | undefined }>((resolve) => {
    call = client[method](request, metadata, options, (error, reply) => resolve({ error, reply }));
  });
  call.on("metadata", (received: grpc.Metadata) => (metadataSeen = received));
  const [status] = (await once(call, "status")) as [grpc.StatusObject];
  const { error, reply } = await answered;
  return { error, reply, metadata: metadataSeen, status };
}

/** Everything a readable call delivers, its initial metadata and its final status. */
async function drain<T>(call: grpc.ClientReadableStream<T> | grpc.ClientDuplexStream<unknown, T>): Promise<{ items: T[]; metadata: grpc.Metadata | undefined; status: grpc.StatusObject }> {
  const items: T[] = [];
  let metadata: grpc.Metadata | undefined;
  call.on("metadata", (received: grpc.Metadata) => (metadata = received));
  call.on("data", (item: T) => items.push(item));
  const [status] = (await once(call, "status")) as [grpc.StatusObject];
  return { items, metadata, status };
}

function expectThroughPortcullis(line: AuditLine, method: string, status = 200): void {
  expect(line).toMatchObject({
    msg: "http",
    method: "POST",
    scheme: "https",
    host: "localhost",
    port: upstreamPort,
    path: `${SERVICE}/${method}`,
    status,
    decision: "allow",
    http_version: "2",
    upstream_version: "2",
  });
  const headers = line.req_headers as Record<string, unknown>;
  expect(headers["content-type"]).toBe("application/grpc");
}

describe("gRPC through portcullis (grpc-js client via grpc_proxy, grpc-js server)", () => {
  it("cannot reach the upstream around portcullis: the client trusts only portcullis' CA", async () => {
    // The same client without the proxy (grpc-js' own switch for it) meets the upstream's real
    // certificate and fails, so every success below went through portcullis.
    const direct = newClient({ "grpc.enable_http_proxy": 0 });
    const id = requestId("direct");
    const { error } = await new Promise<{ error: grpc.ServiceError | null }>((resolve) =>
      direct.Unary({ message: "direct" }, metadataOf({ "x-request-id": id }), { deadline: Date.now() + 5000 }, (failure) => resolve({ error: failure })),
    );
    expect(error?.code).toBe(grpc.status.UNAVAILABLE);
    expect(seen.has(id)).toBe(false);
  });

  it("unary: the reply, request metadata to the upstream, initial and trailing metadata back", async () => {
    const id = requestId("unary");
    const payload = Buffer.from("binary \u0000 payload", "utf8");
    const result = await callUnary("Unary", { message: "hello", payload }, metadataOf({ "x-request-id": id, "x-agent": "agent-1", "x-agent-bin": Buffer.from([7, 8, 9]) }));
    expect(result.error).toBeNull();
    expect(result.reply).toMatchObject({ message: "echo: hello", index: 0 });
    expect(Buffer.compare(result.reply!.payload, payload)).toBe(0);
    expect(result.status.code).toBe(grpc.status.OK);

    // Request metadata reached the upstream (text and binary).
    const upstreamSaw = seen.get(id);
    expect(upstreamSaw?.method).toBe("Unary");
    expect(upstreamSaw?.metadata.get("x-agent")).toEqual(["agent-1"]);
    expect(upstreamSaw?.metadata.get("x-agent-bin")).toEqual([Buffer.from([7, 8, 9])]);

    // The upstream's initial metadata (response headers) and trailing metadata (trailers) reached the client.
    expect(result.metadata?.get("x-initial")).toEqual(["from-upstream"]);
    expect(result.metadata?.get("x-initial-bin")).toEqual([Buffer.from([0xde, 0xad])]);
    expect(result.status.metadata.get("x-trailing")).toEqual(["bye"]);
    expect(result.status.metadata.get("x-trailing-bin")).toEqual([Buffer.from([0, 1, 2, 255])]);

    const line = await auditFor(id);
    expectThroughPortcullis(line, "Unary");
    expect((line.req_headers as Record<string, unknown>)["x-agent"]).toBe("agent-1");
    expect(line.req_bytes).toBeGreaterThan(0);
    expect(line.resp_bytes).toBeGreaterThan(0);
  });

  it("unary with messages larger than the h2 flow-control windows both ways", async () => {
    const id = requestId("large");
    // 3 MiB each way: more than portcullis' 1 MiB stream window and the 64 KiB h2 default.
    const payload = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 31) & 0xff;
    const result = await callUnary("Unary", { message: "large", payload }, metadataOf({ "x-request-id": id }));
    expect(result.error).toBeNull();
    expect(result.reply?.payload.length).toBe(payload.length);
    expect(Buffer.compare(result.reply!.payload, payload)).toBe(0);
    const line = await auditFor(id);
    expectThroughPortcullis(line, "Unary");
    expect(line.req_bytes).toBeGreaterThan(payload.length);
    expect(line.resp_bytes).toBeGreaterThan(payload.length);
  });

  it("server streaming: every message in order, then the status and trailing metadata", async () => {
    const id = requestId("server-stream");
    const call = client.ServerStream({ message: "tick", count: 50, payload: Buffer.alloc(1024, 0x61) }, metadataOf({ "x-request-id": id }));
    const { items, status } = await drain(call);
    expect(status.code).toBe(grpc.status.OK);
    expect(items.map((item) => item.index)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(items.at(-1)?.message).toBe("tick #49");
    expect(status.metadata.get("x-trailing")).toEqual(["stream-done"]);
    expectThroughPortcullis(await auditFor(id), "ServerStream");
  });

  it("client streaming: every message the client wrote reaches the upstream, one reply back", async () => {
    const id = requestId("client-stream");
    const result = new Promise<{ error: grpc.ServiceError | null; reply: EchoReply | undefined }>((resolve) => {
      const call = client.ClientStream(metadataOf({ "x-request-id": id }), {}, (error, reply) => resolve({ error, reply }));
      for (let i = 0; i < 20; i++) call.write({ message: `m${i}`, payload: Buffer.alloc(10_000, i) });
      call.end();
    });
    const { error, reply } = await result;
    expect(error).toBeNull();
    expect(reply?.index).toBe(20);
    expect(reply?.message).toBe(Array.from({ length: 20 }, (_, i) => `m${i}`).join(","));
    expect(reply?.payload.toString()).toBe(String(20 * 10_000));
    const line = await auditFor(id);
    expectThroughPortcullis(line, "ClientStream");
    expect(line.req_bytes).toBeGreaterThan(20 * 10_000);
  });

  it("bidi streaming: ping-pong, each reply before the next message is sent (nothing held until the end)", async () => {
    const id = requestId("bidi");
    const call = client.Bidi(metadataOf({ "x-request-id": id }));
    const words = ["alpha", "bravo", "charlie", "delta", "echo"];
    const replies: EchoReply[] = [];
    const finished = once(call, "status") as Promise<[grpc.StatusObject]>;
    // The next message goes only once the previous reply came back: a proxy that buffered
    // either direction until its end would stall this call.
    for (const word of words) {
      call.write({ message: word });
      const [reply] = (await once(call, "data")) as [EchoReply];
      replies.push(reply);
    }
    call.end();
    const [status] = await finished;
    expect(status.code).toBe(grpc.status.OK);
    expect(replies.map((reply) => reply.message)).toEqual(words.map((word) => word.toUpperCase()));
    expect(replies.map((reply) => reply.index)).toEqual([0, 1, 2, 3, 4]);
    expectThroughPortcullis(await auditFor(id), "Bidi");
  });

  it("status codes: a trailers-only NOT_FOUND reaches the client with its code, details and metadata", async () => {
    const id = requestId("not-found");
    const result = await callUnary("Fail", { message: "trailers-only" }, metadataOf({ "x-request-id": id }));
    expect(seen.get(id)?.method).toBe("Fail");
    expect(result.error?.code).toBe(grpc.status.NOT_FOUND);
    expect(result.error?.details).toBe("no echo named trailers-only");
    expect(result.status.code).toBe(grpc.status.NOT_FOUND);
    expect(result.status.details).toBe("no echo named trailers-only");
    expect(result.status.metadata.get("x-why")).toEqual(["no-such-echo"]);
    // gRPC errors are HTTP 200 exchanges.
    expectThroughPortcullis(await auditFor(id), "Fail");
  });

  it("status codes: NOT_FOUND after the response headers, in the trailers", async () => {
    const id = requestId("not-found-late");
    const result = await callUnary("Fail", { message: "after-headers" }, metadataOf({ "x-request-id": id }));
    expect(result.error?.code).toBe(grpc.status.NOT_FOUND);
    expect(result.error?.details).toBe("no echo named after-headers");
    expect(result.metadata?.get("x-initial")).toEqual(["before-the-error"]);
    expect(result.status.metadata.get("x-why")).toEqual(["no-such-echo"]);
    expectThroughPortcullis(await auditFor(id), "Fail");
  });

  it("deadline: a short client deadline reaches the upstream as grpc-timeout, the client gets DEADLINE_EXCEEDED", async () => {
    const id = requestId("deadline");
    const cancelled = serverEvent("cancelled", id);
    const sentAt = Date.now();
    const result = await callUnary("Slow", { message: "slow" }, metadataOf({ "x-request-id": id }), { deadline: sentAt + 1000 });
    expect(result.error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(result.status.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    // The upstream learned the deadline from the request's grpc-timeout header (without it, Infinity).
    const deadline = seen.get(id)?.deadline;
    expect(deadline).toBeDefined();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : Number(deadline);
    expect(Number.isFinite(deadlineMs)).toBe(true);
    expect(deadlineMs).toBeLessThanOrEqual(sentAt + 2000);
    // And the call ended upstream too.
    await cancelled;
    const line = await auditFor(id);
    expect(line).toMatchObject({ path: `${SERVICE}/Slow`, http_version: "2" });
    expect(String((line.req_headers as Record<string, unknown>)["grpc-timeout"])).toMatch(/^\d{1,8}[HMSmun]$/);
  });

  it("cancellation: a client that cancels a server stream cancels the upstream's call", async () => {
    const id = requestId("cancel");
    const cancelled = serverEvent("cancelled", id);
    const call = client.Endless({ message: "forever" }, metadataOf({ "x-request-id": id }));
    const failed = once(call, "error").then(([error]) => error as grpc.ServiceError);
    // The first message arrives while the upstream's stream is still open: streamed, not buffered.
    const [first] = (await once(call, "data")) as [EchoReply];
    expect(first.message).toBe("first");
    expect(seen.get(id)?.method).toBe("Endless");
    call.cancel();
    expect((await failed).code).toBe(grpc.status.CANCELLED);
    // The upstream sees the cancellation only if portcullis reset the upstream stream.
    await cancelled;
    const line = await auditFor(id);
    expect(line).toMatchObject({ path: `${SERVICE}/Endless`, http_version: "2", upstream_version: "2" });
  });

  it("concurrent calls of every kind multiplexed on one channel", async () => {
    const ids = Array.from({ length: 12 }, (_, i) => requestId(`many-${i}`));
    const results = await Promise.all(
      ids.map(async (id, i) => {
        if (i % 3 === 0) return (await callUnary("Unary", { message: `u${i}` }, metadataOf({ "x-request-id": id }))).reply?.message;
        if (i % 3 === 1) return (await drain(client.ServerStream({ message: `s${i}`, count: 3 }, metadataOf({ "x-request-id": id })))).items.map((item) => item.message).join("|");
        const call = client.Bidi(metadataOf({ "x-request-id": id }));
        const drained = drain(call);
        call.write({ message: `b${i}` });
        call.end();
        return (await drained).items.map((item) => item.message).join("|");
      }),
    );
    expect(results).toEqual(
      ids.map((_, i) => (i % 3 === 0 ? `echo: u${i}` : i % 3 === 1 ? `s${i} #0|s${i} #1|s${i} #2` : `B${i}`)),
    );
    for (const [i, id] of ids.entries()) expectThroughPortcullis(await auditFor(id), i % 3 === 0 ? "Unary" : i % 3 === 1 ? "ServerStream" : "Bidi");
  });

  it("audit: a call the upstream received but never answered still records upstream_version 2", async () => {
    // SPEC §4: upstream_version is absent only when nothing was sent. This request goes to the
    // upstream over h2 (its handler runs), then the client cancels before any response head.
    const id = requestId("unanswered");
    const received = serverEvent("received", id);
    const cancelled = serverEvent("cancelled", id);
    let call!: grpc.ClientUnaryCall;
    const answered = new Promise<grpc.ServiceError | null>((resolve) => {
      call = client.Slow({ message: "unanswered" }, metadataOf({ "x-request-id": id }), {}, (error) => resolve(error));
    });
    // The call failing before it reached the upstream fails the test at once.
    await Promise.race([received, answered.then((error) => Promise.reject(new Error(`the call ended before reaching the upstream: ${error?.message}`)))]);
    call.cancel();
    expect((await answered)?.code).toBe(grpc.status.CANCELLED);
    await cancelled;
    const line = await auditFor(id);
    expect(line).toMatchObject({ path: `${SERVICE}/Slow`, http_version: "2", upstream_version: "2" });
  });

  it("an HTTP/1.1-incapable upstream (grpc-js serves h2 only) is spoken to in h2: upstream_version 2", async () => {
    // The upstream refuses a client that offers only http/1.1 (TLS alert no_application_protocol).
    const refused = await new Promise<NodeJS.ErrnoException>((resolve, reject) => {
      const socket = tlsConnect({ host: "127.0.0.1", port: upstreamPort, servername: "localhost", ALPNProtocols: ["http/1.1"], rejectUnauthorized: false });
      socket.once("secureConnect", () => {
        socket.destroy();
        reject(new Error(`the upstream accepted ALPN ${String(socket.alpnProtocol)}`));
      });
      socket.once("error", resolve);
    });
    expect(refused.code).toBe("ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL");

    const id = requestId("version");
    const result = await callUnary("Unary", { message: "which version" }, metadataOf({ "x-request-id": id }));
    expect(result.status.code).toBe(grpc.status.OK);
    const line = await auditFor(id);
    expect(line.upstream_version).toBe("2");
    expect(line.http_version).toBe("2");
    // So is every other gRPC exchange the upstream answered.
    const answered = proxy.audit.lines.filter((audit) => typeof audit.path === "string" && audit.path.startsWith(`${SERVICE}/`) && audit.status === 200);
    expect(answered.length).toBeGreaterThan(1);
    for (const audit of answered) expect(audit).toMatchObject({ http_version: "2", upstream_version: "2" });
  });

  it("an HTTP/1.1 client reaches the h2-only gRPC upstream: the reply in the body, grpc-status as a chunked trailer", async () => {
    const id = requestId("h1-client");
    // EchoRequest { message: "over h1" } by hand (field 1, length-delimited), in a gRPC frame:
    // a flag byte (0: uncompressed) and the message length, 4 bytes big-endian.
    const message = Buffer.from("over h1");
    const encoded = Buffer.concat([Buffer.from([0x0a, message.length]), message]);
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(encoded.length, 1);
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = https.request(
        `https://localhost:${upstreamPort}${SERVICE}/Unary`,
        { method: "POST", agent: proxy.agent(), ca: proxy.caPem, headers: { "content-type": "application/grpc", te: "trailers", "x-request-id": id } },
        resolve,
      );
      req.on("error", reject);
      req.end(Buffer.concat([prefix, encoded]));
    });
    const chunks: Buffer[] = [];
    for await (const chunk of response) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    expect(response.statusCode).toBe(200);
    expect(response.headers["content-type"]).toMatch(/^application\/grpc/);
    expect(response.headers["x-initial"]).toBe("from-upstream");
    expect(body[0]).toBe(0);
    expect(body.readUInt32BE(1)).toBe(body.length - 5);
    expect(body.subarray(5).includes(Buffer.from("echo: over h1"))).toBe(true);
    // The upstream's trailing HEADERS became HTTP/1.1 chunked trailers.
    expect(response.trailers["grpc-status"]).toBe("0");
    expect(response.trailers["x-trailing"]).toBe("bye");
    expect(seen.get(id)?.method).toBe("Unary");
    const line = await auditFor(id);
    expect(line).toMatchObject({ path: `${SERVICE}/Unary`, status: 200, http_version: "1.1", upstream_version: "2" });
  });
});
