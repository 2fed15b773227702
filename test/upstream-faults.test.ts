import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from "node:tls";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { h2Request, h2ThroughProxy, startH2Upstream, type H2Upstream } from "./helpers/h2.js";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";

/** Upstreams that misbehave: each is answered for that one request, and the proxy keeps serving. */
let pki: ServerPki;
let raw: TlsServer;
let rawPort: number;
let limited: H2Upstream;
let proxy: TestProxy;
const sockets = new Set<TLSSocket>();
/** The upstream connections that answered /switch with a 101 nobody asked for. */
const switched: TLSSocket[] = [];
const closed = (socket: TLSSocket) => new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once("close", () => resolve())));

const GZIPPED = gzipSync("you sent: Bearer fault-secret-1234567890");

/** A TLS server that answers every request with whatever bytes its path asks for. */
const ANSWERS: Record<string, string> = {
  "/switch": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\nyou sent: Bearer SECRET",
  "/h2-settings": "HTTP/1.1 200 OK\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 2\r\n\r\nok",
  "/status-600": "HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nno",
  // A transfer coding Node does not undo: the body would reach the client (and the stages) still gzip'd.
  "/gzip-transfer": `HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n${GZIPPED.length.toString(16)}\r\n${GZIPPED.toString("latin1")}\r\n0\r\n\r\n`,
};

/** How many /refused-once streams the h2 upstream refused. */
let refusals = 0;

beforeAll(async () => {
  process.env.PCX_FAULT_SECRET = "fault-secret-1234567890";
  pki = await makeUpstreamPki();
  raw = createTlsServer({ key: pki.key, cert: pki.ipCert, SNICallback: pki.sniCallback, ALPNProtocols: ["http/1.1"] }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    let head = "";
    socket.on("data", (chunk: Buffer) => {
      head += chunk.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const path = head.split(" ")[1] ?? "/";
      head = head.slice(end + 4);
      if (path === "/switch") switched.push(socket);
      // Transfer-Encoding: identity (obsolete, nothing coded): the body runs to the connection's end.
      if (path === "/identity-transfer") return void socket.end("HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nplain body");
      socket.write(ANSWERS[path] ?? "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfine.");
    });
  });
  await new Promise<void>((resolve) => raw.listen(0, "127.0.0.1", resolve));
  rawPort = (raw.address() as AddressInfo).port;
  limited = await startH2Upstream(pki, (stream, headers) => {
    if (headers[":path"] === "/trailers-only") {
      stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "5", "grpc-message": "not found" }, { endStream: true });
      return;
    }
    if (headers[":path"] === "/refused-once" || headers[":path"] === "/refused-always") {
      // RST_STREAM(REFUSED_STREAM): not processed, safe to send again (RFC 9113 8.7).
      if (headers[":path"] === "/refused-always" || refusals++ === 0) return void stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      stream.respond({ ":status": 200 });
      return void stream.end("second try");
    }
    // Answered on the next turn, so a burst really overlaps.
    setImmediate(() => {
      stream.respond({ ":status": 200 });
      stream.end(`limited ${headers[":path"]}`);
    });
  });
  limited.server.updateSettings({ maxConcurrentStreams: 2 });
  proxy = await startProxy(policyTrusting(pki.caFile, 'secrets:\n  s: { env: PCX_FAULT_SECRET }\ncredentials:\n  - { name: to-limited, hosts: [127.0.0.1], header: { name: Authorization, value: "Bearer ${secrets.s}" } }\n'));
});

afterAll(async () => {
  await proxy?.close();
  for (const socket of sockets) socket.destroy();
  await new Promise<void>((resolve) => (raw ? raw.close(() => resolve()) : resolve()));
  await limited?.close();
});

async function stillServing(): Promise<void> {
  const answer = await request(`https://localhost:${rawPort}/fine`, { dispatcher: proxy.dispatcher });
  expect(await answer.body.text()).toBe("fine.");
}

describe("upstream faults", () => {
  it("answers 502 when an upstream switches protocols on a request that did not ask to (HTTP/1.1 and h2 clients)", async () => {
    const h1 = await request(`https://localhost:${rawPort}/switch`, { dispatcher: proxy.dispatcher });
    expect(h1.statusCode).toBe(502);
    expect(await h1.body.text()).not.toContain("SECRET");
    const { session } = await h2ThroughProxy(proxy.port, "localhost", rawPort, proxy.caPem);
    const h2 = await h2Request(session, { ":path": "/switch" });
    expect(h2.status).toBe(502);
    expect(h2.body.toString()).not.toContain("you sent");
    session.close();
    // Neither connection is left open behind the refusal (nor kept in the pool for the next request).
    expect(switched.length).toBe(2);
    await Promise.all(switched.map(closed));
    await stillServing();
  });

  it("drops connection-specific fields an HTTP/1.1 upstream sends, and refuses a status no client can be given", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", rawPort, proxy.caPem);
    const settings = await h2Request(session, { ":path": "/h2-settings" });
    expect(settings.status).toBe(200);
    expect(settings.headers["http2-settings"]).toBeUndefined();
    const odd = await h2Request(session, { ":path": "/status-600" });
    expect(odd.status).toBe(502);
    session.close();
    expect((await request(`https://localhost:${rawPort}/status-600`, { dispatcher: proxy.dispatcher })).statusCode).toBe(502);
    const coded = await request(`https://localhost:${rawPort}/gzip-transfer`, { dispatcher: proxy.dispatcher });
    expect(coded.statusCode).toBe(502);
    expect(await coded.body.text()).toContain("Transfer-Encoding");
    const identity = await request(`https://localhost:${rawPort}/identity-transfer`, { dispatcher: proxy.dispatcher });
    expect(identity.statusCode).toBe(200);
    expect(await identity.body.text()).toBe("plain body");
    await stillServing();
  });

  it("keeps a burst within an h2 upstream's stream limit by opening more connections, refusing none", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", limited.port, proxy.caPem);
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => h2Request(session, { ":path": `/burst/${i}` })));
    expect(answers.map((answer) => answer.status)).toEqual(Array(8).fill(200));
    expect(answers.map((answer) => answer.body.toString())).toEqual(Array.from({ length: 8 }, (_, i) => `limited /burst/${i}`));
    session.close();
  });

  it("sends a bodyless request the h2 upstream refused unprocessed once more; a refusal of the second try is the client's 502", async () => {
    const once = await request(`https://localhost:${limited.port}/refused-once`, { dispatcher: proxy.dispatcher });
    expect(once.statusCode).toBe(200);
    expect(await once.body.text()).toBe("second try");
    const always = await request(`https://localhost:${limited.port}/refused-always`, { dispatcher: proxy.dispatcher });
    expect(always.statusCode).toBe(502);
    expect(await always.body.text()).toContain("REFUSED_STREAM");
    // A request with a body has gone with its stream: it is not sent again.
    refusals = 0;
    const withBody = await request(`https://localhost:${limited.port}/refused-once`, { method: "POST", body: "payload", dispatcher: proxy.dispatcher });
    expect(withBody.statusCode).toBe(502);
    await withBody.body.text();
  });

  it("sends a trailers-only answer as one HEADERS frame even when a stage reads bodies on that host", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "127.0.0.1", limited.port, proxy.caPem);
    const flags = await new Promise<number>((resolve, reject) => {
      const stream = session.request({ ":path": "/trailers-only", ":method": "POST", "content-type": "application/grpc" });
      stream.once("response", (_headers, responseFlags: number) => resolve(responseFlags));
      stream.once("error", reject);
      stream.end();
    });
    expect(flags & http2.constants.NGHTTP2_FLAG_END_STREAM).toBeTruthy();
    session.close();
  });
});
