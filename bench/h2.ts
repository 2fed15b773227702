// The HTTP/2 and gRPC scenarios of bench/run.ts: the client side.
//
// h2 with node:http2. Through a proxy: an HTTP/1.1 CONNECT to the proxy (node:http), TLS inside
// the tunnel with ALPN h2 only (trusting the proxy's CA), then http2.connect over that socket.
// Direct: TLS to the upstream's h2 port (trusting the upstream's CA). One h2 connection per
// scenario run. gRPC with grpc-js, which finds the proxy the way applications set it up: the
// grpc_proxy variable, read when the channel is made (HTTP CONNECT, then TLS in the tunnel).
import { once } from "node:events";
import http from "node:http";
import http2, { type ClientHttp2Session, type IncomingHttpHeaders } from "node:http2";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { benchFile, BENCH_DOMAIN, describeError, percentile, timedRuns } from "./lib.js";

/**
 * The client's receive windows: 4 MiB per stream, 16 MiB per connection (Go's client uses
 * 4 MiB per stream, browsers 6 MiB / 15 MiB). node:http2's 64 KiB default would make the
 * download row measure window updates rather than the proxy.
 */
const CLIENT_STREAM_WINDOW = 4 * 1024 * 1024;
const CLIENT_SESSION_WINDOW = 16 * 1024 * 1024;
const SMALL_BODY_BYTES = 64;

/** One way to the h2 upstreams: direct, or through a proxy. */
export interface H2Path {
  /** http://127.0.0.1:PORT of the proxy; none for direct. */
  proxyUrl?: string;
  /** The CA the client trusts for the TLS session it sees (upstream's for direct, else the proxy's). */
  ca: string;
  /** Where GETs and downloads go: the h2 upstream, or the HTTP/1.1-only one (portcullis h2→h1). */
  httpPort: number;
  /** Where gRPC calls go: the grpc-js server, or the HTTP/1.1 server's gRPC (portcullis h2→h1). */
  grpcPort: number;
  /** CPU seconds the proxy's process has used so far, charged to the measured part; none for direct. */
  cpu?: () => number;
  /** Counts each HTTP request (h2 stream, gRPC call) sent, for the audit log check. */
  sent(count: number): void;
}

/** CPU the path's proxy used over `run`, in seconds (NaN for direct or without /proc). */
async function withCpu<T>(path: H2Path, run: () => Promise<T>): Promise<{ result: T; cpu: number }> {
  const before = path.cpu?.() ?? NaN;
  const result = await run();
  return { result, cpu: (path.cpu?.() ?? NaN) - before };
}

// ---------------------------------------------------------------------------------------------
// h2 connections.

/** An HTTP/1.1 CONNECT to the proxy; the socket is the tunnel. */
function connectTunnel(proxyUrl: string, authority: string): Promise<Socket> {
  const proxy = new URL(proxyUrl);
  return new Promise((resolve, reject) => {
    const request = http.request({ host: proxy.hostname, port: Number(proxy.port), method: "CONNECT", path: authority, headers: { host: authority }, agent: false });
    const timer = setTimeout(() => request.destroy(new Error(`CONNECT ${authority} through ${proxyUrl}: no answer within 10 s`)), 10_000);
    request.once("connect", (response, socket, head) => {
      clearTimeout(timer);
      if (response.statusCode !== 200) {
        socket.destroy();
        reject(new Error(`CONNECT ${authority} through ${proxyUrl} answered ${response.statusCode}`));
        return;
      }
      if (head.length) socket.unshift(head);
      resolve(socket);
    });
    request.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    request.end();
  });
}

/** An h2 session to https://bench.test:PORT, its TLS session having negotiated h2. */
async function openH2(path: H2Path, port: number): Promise<ClientHttp2Session> {
  const authority = `${BENCH_DOMAIN}:${port}`;
  const socket = path.proxyUrl ? await connectTunnel(path.proxyUrl, authority) : undefined;
  const secure = tls.connect({
    ...(socket ? { socket } : { host: "127.0.0.1", port }),
    servername: BENCH_DOMAIN,
    ca: path.ca,
    ALPNProtocols: ["h2"],
  });
  try {
    await once(secure, "secureConnect");
  } catch (error) {
    secure.destroy();
    throw error;
  }
  if (secure.alpnProtocol !== "h2") {
    secure.destroy();
    throw new Error(`TLS to ${authority}${path.proxyUrl ? ` through ${path.proxyUrl}` : ""} negotiated ${JSON.stringify(secure.alpnProtocol)}, not h2`);
  }
  const session = http2.connect(`https://${authority}`, {
    createConnection: () => secure,
    settings: { initialWindowSize: CLIENT_STREAM_WINDOW, enablePush: false },
  });
  session.on("error", () => session.destroy());
  await once(session, "connect");
  session.setLocalWindowSize(CLIENT_SESSION_WINDOW);
  return session;
}

async function closeH2(session: ClientHttp2Session): Promise<void> {
  if (session.destroyed) return;
  const closed = once(session, "close").then(() => undefined);
  session.close();
  const timer = setTimeout(() => session.destroy(), 5_000);
  await closed;
  clearTimeout(timer);
}

/** One GET on the session; resolves with the body size once the stream ended with 200. */
function h2Get(session: ClientHttp2Session, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": "GET", ":path": path }, { endStream: true });
    let status = 0;
    let bytes = 0;
    let ended = false;
    stream.once("response", (headers: IncomingHttpHeaders) => (status = Number(headers[":status"])));
    stream.on("data", (chunk: Buffer) => (bytes += chunk.length));
    stream.once("end", () => {
      ended = true;
      if (status === 200) resolve(bytes);
      else reject(new Error(`GET ${path} answered ${status}`));
    });
    stream.once("error", reject);
    stream.once("close", () => {
      if (!ended) reject(new Error(`GET ${path}: the stream closed before its end (code ${stream.rstCode})`));
    });
  });
}

/** `total` GETs of /small, `streams` in flight at all times on the one session; latencies in ms, sorted. */
async function runH2Gets(path: H2Path, session: ClientHttp2Session, total: number, streams: number, what: string, anomaly: (text: string) => void) {
  const once = async () => {
    path.sent(1);
    const bytes = await h2Get(session, "/small");
    if (bytes !== SMALL_BODY_BYTES) throw new Error(`/small arrived with ${bytes} bytes`);
  };
  const run = await timedRuns(total, streams, once, () => session.destroyed);
  if (run.latencies.length === 0) throw new Error(`all ${total} h2 requests failed (${what}); the first: ${run.firstError}`);
  if (run.errors) anomaly(`${what}: ${run.errors} of ${total} h2 requests failed; the first: ${run.firstError}`);
  return run;
}

// ---------------------------------------------------------------------------------------------
// The h2 scenarios. Each returns the measured figures and the proxy's CPU over the measured part.

export async function h2Gets(path: H2Path, p: { streams: number; requests: number; warmup: number }, anomaly: (text: string) => void) {
  const session = await openH2(path, path.httpPort);
  try {
    await runH2Gets(path, session, p.warmup, p.streams, "h2 warm-up", anomaly);
    const { result: run, cpu } = await withCpu(path, () => runH2Gets(path, session, p.requests, p.streams, "h2 multiplexed GETs", anomaly));
    return {
      rps: run.latencies.length / (run.elapsedMs / 1000),
      p50: percentile(run.latencies, 50),
      p99: percentile(run.latencies, 99),
      cpuPerRequestUs: (cpu / run.latencies.length) * 1e6,
    };
  } finally {
    await closeH2(session);
  }
}

async function h2DownloadOnce(path: H2Path, session: ClientHttp2Session, bytes: number): Promise<number> {
  path.sent(1);
  const started = performance.now();
  const received = await h2Get(session, `/download?bytes=${bytes}`);
  const elapsedMs = performance.now() - started;
  if (received !== bytes) throw new Error(`h2 download: ${received} of ${bytes} bytes`);
  return elapsedMs;
}

export async function h2Download(path: H2Path, p: { bytes: number; warmupBytes: number }) {
  const session = await openH2(path, path.httpPort);
  try {
    await h2DownloadOnce(path, session, p.warmupBytes);
    const { result: elapsedMs, cpu } = await withCpu(path, () => h2DownloadOnce(path, session, p.bytes));
    const mb = p.bytes / 1e6;
    return { mbps: mb / (elapsedMs / 1000), cpuPerMbUs: (cpu / mb) * 1e6 };
  } finally {
    await closeH2(session);
  }
}

// ---------------------------------------------------------------------------------------------
// gRPC (bench/bench.proto).

interface Payload {
  data: Buffer;
}
interface BenchClient extends grpc.Client {
  Unary(request: Payload, callback: grpc.requestCallback<Payload>): grpc.ClientUnaryCall;
  Stream(request: { count: number; size: number }): grpc.ClientReadableStream<Payload>;
}

let benchService: grpc.ServiceClientConstructor | undefined;
function service(): grpc.ServiceClientConstructor {
  if (!benchService) {
    const definition = protoLoader.loadSync(benchFile("bench.proto"), { keepCase: true, longs: Number, defaults: true });
    benchService = (grpc.loadPackageDefinition(definition) as unknown as { bench: { Bench: grpc.ServiceClientConstructor } }).bench.Bench;
  }
  return benchService;
}

const PROXY_VARIABLES = ["grpc_proxy", "https_proxy", "http_proxy", "no_grpc_proxy", "no_proxy"] as const;

/**
 * A channel of its own (no subchannel shared with an earlier client). Through a proxy:
 * grpc_proxy set while the channel is made, target dns:bench.test:PORT; grpc-js then dials the
 * proxy, sends CONNECT bench.test:PORT and does TLS for bench.test inside the tunnel (the only
 * CA it trusts is the proxy's, so a call that went around the proxy would fail). Direct:
 * 127.0.0.1:PORT with bench.test as TLS name and authority, proxy lookup off.
 */
async function grpcClient(path: H2Path): Promise<BenchClient> {
  const Bench = service();
  const credentials = grpc.credentials.createSsl(Buffer.from(path.ca));
  const options: grpc.ChannelOptions = { "grpc.use_local_subchannel_pool": 1 };
  let client: BenchClient;
  if (!path.proxyUrl) {
    client = new Bench(`127.0.0.1:${path.grpcPort}`, credentials, {
      ...options,
      "grpc.enable_http_proxy": 0,
      "grpc.ssl_target_name_override": BENCH_DOMAIN,
      "grpc.default_authority": `${BENCH_DOMAIN}:${path.grpcPort}`,
    }) as unknown as BenchClient;
  } else {
    const saved = PROXY_VARIABLES.map((name) => [name, process.env[name]] as const);
    for (const name of PROXY_VARIABLES) delete process.env[name];
    process.env.grpc_proxy = path.proxyUrl;
    try {
      client = new Bench(`dns:${BENCH_DOMAIN}:${path.grpcPort}`, credentials, options) as unknown as BenchClient;
    } finally {
      for (const [name, value] of saved) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  }
  try {
    await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (error) => (error ? reject(error) : resolve())));
  } catch (error) {
    client.close();
    throw new Error(`gRPC channel to ${BENCH_DOMAIN}:${path.grpcPort}${path.proxyUrl ? ` through ${path.proxyUrl}` : ""} not ready: ${describeError(error)}`);
  }
  return client;
}

function unaryOnce(client: BenchClient, payload: Buffer): Promise<void> {
  return new Promise((resolve, reject) =>
    client.Unary({ data: payload }, (error, reply) => {
      if (error) reject(error);
      else if (!reply || reply.data.length !== payload.length) reject(new Error(`Unary answered ${reply?.data.length} bytes, expected ${payload.length}`));
      else resolve();
    }),
  );
}

async function runUnary(path: H2Path, client: BenchClient, total: number, inFlight: number, payload: Buffer, what: string, anomaly: (text: string) => void) {
  const run = await timedRuns(total, inFlight, () => (path.sent(1), unaryOnce(client, payload)));
  const done = run.latencies.length;
  if (done === 0) throw new Error(`all ${total} gRPC unary calls failed (${what}); the first: ${run.firstError}`);
  if (run.errors) anomaly(`${what}: ${run.errors} of ${total} gRPC unary calls failed; the first: ${run.firstError}`);
  return { done, elapsedMs: run.elapsedMs };
}

export async function grpcUnary(path: H2Path, p: { calls: number; warmup: number; inFlight: number; size: number }, anomaly: (text: string) => void) {
  const client = await grpcClient(path);
  const payload = Buffer.alloc(p.size, 0x61);
  try {
    await runUnary(path, client, p.warmup, p.inFlight, payload, "gRPC unary warm-up", anomaly);
    const { result: run, cpu } = await withCpu(path, () => runUnary(path, client, p.calls, p.inFlight, payload, "gRPC unary", anomaly));
    return { cps: run.done / (run.elapsedMs / 1000), cpuPerCallUs: (cpu / run.done) * 1e6 };
  } finally {
    client.close();
  }
}

/** One server-streaming call of `count` messages; ms from the call to its OK status. */
function streamOnce(path: H2Path, client: BenchClient, count: number, size: number): Promise<number> {
  path.sent(1);
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let received = 0;
    let wrongSize = 0;
    const call = client.Stream({ count, size });
    call.on("data", (message: Payload) => {
      received++;
      if (message.data.length !== size) wrongSize++;
    });
    call.once("error", (error) => reject(new Error(`gRPC stream failed after ${received} of ${count} messages: ${describeError(error)}`)));
    // Done when both the last message ('end') and the OK status are in, whichever comes last.
    let ok = false;
    let ended = false;
    const settle = () => {
      if (!ok || !ended) return;
      const elapsedMs = performance.now() - started;
      if (received !== count || wrongSize) reject(new Error(`gRPC stream: ${received} of ${count} messages, ${wrongSize} of the wrong size`));
      else resolve(elapsedMs);
    };
    call.once("end", () => ((ended = true), settle()));
    call.once("status", (status: grpc.StatusObject) => {
      if (status.code !== grpc.status.OK) return; // the error event reports it
      ok = true;
      settle();
    });
  });
}

export async function grpcStream(path: H2Path, p: { messages: number; warmup: number; size: number }) {
  const client = await grpcClient(path);
  try {
    await streamOnce(path, client, p.warmup, p.size);
    const { result: elapsedMs, cpu } = await withCpu(path, () => streamOnce(path, client, p.messages, p.size));
    return { mps: p.messages / (elapsedMs / 1000), cpuPerMessageUs: (cpu / p.messages) * 1e6 };
  } finally {
    client.close();
  }
}
