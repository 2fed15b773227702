import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import https from "node:https";
import type { Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { EventEmitter } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { h2Request, h2ThroughProxy, readStream, startH2Upstream, type H2Upstream } from "./helpers/h2.js";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { openConnect } from "./helpers/tunnel.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";
import { resetStream } from "../src/transport/http2/reset.js";

const MiB = 1024 * 1024;
const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

let pki: ServerPki;
let h2Up: H2Upstream;
let h1Up: TestUpstream;
let proxy: TestProxy;
/** The h2 upstream's streams by path, for tests that act on them. */
const h2Seen: { path: string; headers: IncomingHttpHeaders; stream: ServerHttp2Stream }[] = [];
const h1Aborted: string[] = [];
const events = new EventEmitter();

function respondH2(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
  const url = new URL(String(headers[":path"]), "https://x");
  h2Seen.push({ path: url.pathname, headers, stream });
  events.emit("h2-stream", url.pathname, stream);
  switch (url.pathname) {
    case "/echo":
      void readStream(stream).then((body) => {
        stream.respond({ ":status": 200, "content-type": "application/json" }, { waitForTrailers: true });
        stream.once("wantTrailers", () => stream.sendTrailers({ "x-upstream-trailer": "h2", "grpc-status": "0" }));
        const trailers = (stream as ServerHttp2Stream & { trailersSeen?: IncomingHttpHeaders }).trailersSeen;
        stream.end(JSON.stringify({ method: headers[":method"], path: headers[":path"], authority: headers[":authority"], headers, hash: sha256(body), length: body.length, trailers: trailers ?? null }));
      });
      stream.once("trailers", (t: IncomingHttpHeaders) => ((stream as ServerHttp2Stream & { trailersSeen?: IncomingHttpHeaders }).trailersSeen = t));
      return;
    case "/big": {
      const total = Number(url.searchParams.get("mib")) * MiB;
      stream.respond({ ":status": 200, "content-type": "application/octet-stream", "content-length": String(total) });
      const chunk = Buffer.alloc(64 * 1024, 5);
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          sent += chunk.length;
          if (!stream.write(chunk)) return void stream.once("drain", pump);
        }
        stream.end();
      };
      pump();
      return;
    }
    case "/many-headers": {
      // More fields than Node's h2 client takes by default (128).
      const fields: Record<string, string> = { ":status": "200" };
      for (let i = 0; i < 300; i++) fields[`x-field-${i}`] = String(i);
      stream.respond(fields);
      stream.end("many");
      return;
    }
    case "/sse":
      stream.respond({ ":status": 200, "content-type": "text/event-stream" });
      stream.write("data: first\n\n");
      events.once("sse-finish", () => stream.end("data: last\n\n"));
      return;
    case "/slow":
      // Answers when the test says so.
      events.once("slow-finish", () => {
        if (!stream.closed) {
          stream.respond({ ":status": 200 });
          stream.end("slow done");
        }
      });
      return;
    case "/reset-mid-body":
      stream.respond({ ":status": 200, "content-type": "application/octet-stream" });
      stream.write(Buffer.alloc(32 * 1024, 1), () => resetStream(stream, http2.constants.NGHTTP2_INTERNAL_ERROR));
      return;
    case "/never":
      // Holds the stream open: the client resets it.
      return;
    default:
      stream.respond({ ":status": 200, "content-type": "text/plain" });
      stream.end(`h2 ${headers[":method"]} ${headers[":path"]}`);
  }
}

beforeAll(async () => {
  pki = await makeUpstreamPki();
  h2Up = await startH2Upstream(pki, respondH2);
  h1Up = await startUpstream((req, res) => {
    const url = new URL(req.url ?? "/", "https://x");
    if (url.pathname === "/never") {
      req.once("close", () => {
        h1Aborted.push(url.pathname);
        events.emit("h1-aborted");
      });
      events.emit("h1-never");
      return;
    }
    void readStream(req).then((body) => {
      if (url.pathname === "/echo") {
        res.writeHead(200, { "Content-Type": "application/json", Trailer: "X-Upstream-Trailer" });
        res.write(JSON.stringify({ method: req.method, url: req.url, rawHeaders: req.rawHeaders, hash: sha256(body), length: body.length, trailers: req.rawTrailers, version: req.httpVersion }));
        res.addTrailers({ "X-Upstream-Trailer": "h1" });
        res.end();
        return;
      }
      res.writeHead(200, { "Content-Type": "text/plain" }).end(`h1 ${req.method} ${req.url}`);
    });
  }, pki);
  proxy = await startProxy(policyTrusting(pki.caFile, "credentials:\n  - { name: h2-token, hosts: [127.0.0.1], header: { name: Authorization, value: \"Bearer ${secrets.h2}\" } }\nsecrets:\n  h2: { env: PCX_H2_TEST_SECRET }\n"));
});

afterAll(async () => {
  await proxy?.close();
  await h2Up?.close();
  await h1Up?.close();
});

describe("HTTP/2 through portcullis", () => {
  it("h2 client to an h2-only upstream: one exchange per stream, audit says 2 and 2, and tunnels share one upstream session", async () => {
    const before = h2Up.sessionCount();
    const a = await h2ThroughProxy(proxy.port, "localhost", h2Up.port, proxy.caPem);
    const b = await h2ThroughProxy(proxy.port, "localhost", h2Up.port, proxy.caPem);
    expect(a.tls.alpnProtocol).toBe("h2");
    const answers = await Promise.all([a.session, b.session, a.session].map((session, i) => h2Request(session, { ":path": `/hello/${i}` })));
    expect(answers.map((answer) => answer.body.toString())).toEqual(["h2 GET /hello/0", "h2 GET /hello/1", "h2 GET /hello/2"]);
    expect(answers[0]!.headers["x-request-id"]).toBeTruthy();
    const line = await proxy.audit.waitFor((l) => l.path === "/hello/1");
    expect(line).toMatchObject({ msg: "http", http_version: "2", upstream_version: "2", status: 200, method: "GET", scheme: "https", host: "localhost" });
    // Both tunnels' streams were multiplexed on one upstream h2 connection.
    expect(h2Up.sessionCount() - before).toBe(1);
    a.session.close();
    b.session.close();
  });

  it("translates both ways: an h2 client reaches an HTTP/1.1-only upstream, an HTTP/1.1 client reaches an h2-only upstream", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", h1Up.port, proxy.caPem);
    const body = randomBytes(100_000);
    const answer = await h2Request(session, { ":path": "/echo?q=1", "x-custom": "kept", cookie: ["a=1", "b=2"] }, body);
    const seen = JSON.parse(answer.body.toString()) as { method: string; url: string; rawHeaders: string[]; hash: string; version: string };
    expect(seen).toMatchObject({ method: "POST", url: "/echo?q=1", hash: sha256(body), version: "1.1" });
    // :authority becomes Host; the h2 client's headers arrive, no pseudo-header leaks as a field.
    expect(seen.rawHeaders).toContain(`localhost:${h1Up.port}`);
    expect(seen.rawHeaders).toContain("kept");
    expect(seen.rawHeaders.some((name) => name.startsWith(":"))).toBe(false);
    // h2 cookie crumbs become one HTTP/1.1 Cookie (RFC 9113 8.2.3).
    expect(seen.rawHeaders.filter((_, i) => i % 2 === 0 && seen.rawHeaders[i]!.toLowerCase() === "cookie")).toHaveLength(1);
    expect(seen.rawHeaders).toContain("a=1; b=2");
    expect(await proxy.audit.waitFor((l) => l.path === "/echo?q=1" && l.http_version === "2")).toMatchObject({ upstream_version: "1.1", status: 200 });
    session.close();

    const viaH1 = await request(`https://localhost:${h2Up.port}/from-h1?x=2`, { dispatcher: proxy.dispatcher, headers: { "X-Mixed-Case": "yes" } });
    expect(await viaH1.body.text()).toBe("h2 GET /from-h1?x=2");
    const seenH2 = h2Seen.find((entry) => entry.path === "/from-h1")!;
    expect(seenH2.headers[":authority"]).toBe(`localhost:${h2Up.port}`);
    expect(seenH2.headers["x-mixed-case"]).toBe("yes");
    expect(seenH2.headers.connection).toBeUndefined();
    expect(await proxy.audit.waitFor((l) => l.path === "/from-h1?x=2")).toMatchObject({ http_version: "1.1", upstream_version: "2" });
  });

  it("takes an h2 upstream's answer with 300 header fields, as an HTTP/1.1 one's", async () => {
    const res = await request(`https://localhost:${h2Up.port}/many-headers`, { dispatcher: proxy.dispatcher });
    expect(res.statusCode).toBe(200);
    expect(res.headers["x-field-299"]).toBe("299");
    expect(await res.body.text()).toBe("many");
  });

  it("carries 100 concurrent streams on one client connection", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", h2Up.port, proxy.caPem);
    const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => h2Request(session, { ":path": `/many/${i}` })));
    expect(answers.every((answer, i) => answer.status === 200 && answer.body.toString() === `h2 GET /many/${i}`)).toBe(true);
    session.close();
  });

  it("streams 50 MiB down and 10 MiB up over h2, hash-checked", { timeout: 60_000 }, async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", h2Up.port, proxy.caPem);
    const down = await h2Request(session, { ":path": "/big?mib=50" });
    expect(down.body.length).toBe(50 * MiB);
    expect(sha256(down.body)).toBe(sha256(Buffer.alloc(50 * MiB, 5)));
    const upBody = randomBytes(10 * MiB);
    const up = await h2Request(session, { ":path": "/echo" }, upBody);
    expect(JSON.parse(up.body.toString())).toMatchObject({ hash: sha256(upBody), length: 10 * MiB });
    session.close();
  });

  it("relays server-sent events over h2 as they arrive, before the stream ends", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", h2Up.port, proxy.caPem);
    const stream = session.request({ ":path": "/sse" });
    const first = await new Promise<string>((resolve) => stream.once("data", (chunk: Buffer) => resolve(chunk.toString())));
    expect(first).toBe("data: first\n\n");
    const rest = readStream(stream);
    events.emit("sse-finish");
    expect((await rest).toString()).toBe("data: last\n\n");
    session.close();
  });

  describe("trailers, both directions, in all four combinations", () => {
    const cases = [
      { client: "1.1", upstream: "1.1" },
      { client: "1.1", upstream: "2" },
      { client: "2", upstream: "1.1" },
      { client: "2", upstream: "2" },
    ] as const;
    for (const { client, upstream } of cases) {
      it(`client ${client} → upstream ${upstream}`, async () => {
        const port = upstream === "2" ? h2Up.port : h1Up.port;
        const path = `/echo?combo=${client}-${upstream}`;
        let body: { trailers: unknown };
        let responseTrailers: Record<string, unknown>;
        if (client === "2") {
          const { session } = await h2ThroughProxy(proxy.port, "localhost", port, proxy.caPem);
          const answer = await h2Request(session, { ":method": "POST", ":path": path, te: "trailers" }, undefined, { "x-client-trailer": "from-client" });
          body = JSON.parse(answer.body.toString());
          responseTrailers = answer.trailers;
          session.close();
        } else {
          ({ body, responseTrailers } = await h1WithTrailers(port, path));
        }
        const sentTrailers = JSON.stringify(body.trailers).toLowerCase();
        expect(sentTrailers).toContain("x-client-trailer");
        expect(sentTrailers).toContain("from-client");
        expect(responseTrailers["x-upstream-trailer"]).toBe(upstream === "2" ? "h2" : "h1");
        expect(await proxy.audit.waitFor((l) => l.path === path)).toMatchObject({ http_version: client, upstream_version: upstream });
      });
    }
  });

  it("a client's RST_STREAM cancels the upstream request (h2 upstream: stream reset; HTTP/1.1 upstream: connection closed)", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", h2Up.port, proxy.caPem);
    const upstreamStream = new Promise<ServerHttp2Stream>((resolve) => events.on("h2-stream", (path: string, stream: ServerHttp2Stream) => path === "/never" && resolve(stream)));
    const stream = session.request({ ":path": "/never" });
    stream.on("error", () => undefined);
    const seen = await upstreamStream;
    const upstreamClosed = new Promise<void>((resolve) => seen.once("close", () => resolve()));
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await upstreamClosed;
    expect(seen.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);

    const { session: toH1 } = await h2ThroughProxy(proxy.port, "localhost", h1Up.port, proxy.caPem);
    const arrived = new Promise<void>((resolve) => events.once("h1-never", resolve));
    const h1Stream = toH1.request({ ":path": "/never" });
    h1Stream.on("error", () => undefined);
    await arrived;
    h1Stream.close(http2.constants.NGHTTP2_CANCEL);
    await new Promise<void>((resolve) => (h1Aborted.length ? resolve() : events.once("h1-aborted", resolve)));
    expect(h1Aborted).toContain("/never");
    const lines = proxy.audit.lines.filter((l) => l.path === "/never");
    expect(lines.map((l) => (l.error as { type?: string } | undefined)?.type)).toEqual(["client_closed", "client_closed"]);
    session.close();
    toH1.close();
  });

  it("an upstream reset mid-body resets the client's stream: never a short success", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", h2Up.port, proxy.caPem);
    await expect(h2Request(session, { ":path": "/reset-mid-body" })).rejects.toThrow(/reset|stream/i);
    const line = await proxy.audit.waitFor((l) => l.path === "/reset-mid-body");
    expect((line.error as { type: string }).type).toBe("upstream_protocol_error");
    session.close();
  });

  it("upstream GOAWAY mid-flight: the stream in flight finishes, new streams go to a new upstream session", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", h2Up.port, proxy.caPem);
    await h2Request(session, { ":path": "/warm" });
    const sessionsBefore = h2Up.sessionCount();
    const upstreamStream = new Promise<ServerHttp2Stream>((resolve) => events.on("h2-stream", (path: string, stream: ServerHttp2Stream) => path === "/slow" && resolve(stream)));
    const inFlight = h2Request(session, { ":path": "/slow" });
    const slow = await upstreamStream;
    // Streams up to the one in flight may finish; the upstream takes no new ones on this session.
    (slow.session as http2.ServerHttp2Session).goaway(http2.constants.NGHTTP2_NO_ERROR, slow.id);
    // The proxy sees the GOAWAY before it sends its next stream: a PING round trip settles that.
    await new Promise<void>((resolve) => session.ping(() => resolve()));
    const after = await h2Request(session, { ":path": "/after-goaway" });
    expect(after.body.toString()).toBe("h2 GET /after-goaway");
    expect(h2Up.sessionCount()).toBe(sessionsBefore + 1);
    events.emit("slow-finish");
    expect((await inFlight).body.toString()).toBe("slow done");
    session.close();
  });

  it("answers a stream whose :authority names another host with 400 on that stream; the others carry on", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", h2Up.port, proxy.caPem);
    const [wrong, right] = await Promise.all([
      h2Request(session, { ":path": "/x", ":authority": "evil.example:443" }),
      h2Request(session, { ":path": "/fine" }),
    ]);
    expect(wrong.status).toBe(400);
    expect(wrong.headers["x-portcullis-error"]).toBe("bad_request");
    expect(JSON.parse(wrong.body.toString()).error.type).toBe("bad_request");
    expect(right.body.toString()).toBe("h2 GET /fine");
    expect(h2Seen.some((entry) => entry.path === "/x")).toBe(false);
    session.close();
  });

  it("puts credentials on h2 streams and scrubs their echo from body and trailers", async () => {
    process.env.PCX_H2_TEST_SECRET = "h2-secret-value-0123456789";
    const { session } = await h2ThroughProxy(proxy.port, "127.0.0.1", h2Up.port, proxy.caPem);
    const answer = await h2Request(session, { ":method": "POST", ":path": "/echo", authorization: "Bearer agent-fake" }, "x");
    const text = answer.body.toString();
    const seen = h2Seen.filter((entry) => entry.path === "/echo").at(-1)!;
    expect(seen.headers.authorization).toBe("Bearer h2-secret-value-0123456789");
    expect(text).not.toContain("h2-secret-value-0123456789");
    expect(text).toContain("[REDACTED]");
    expect(await proxy.audit.waitFor((l) => l.host === "127.0.0.1" && l.path === "/echo")).toMatchObject({ credentials: ["h2-token"], http_version: "2" });
    session.close();
  });

  it("answers a denied h2 stream with the JSON 403 of SPEC section 5", async () => {
    const denying = await startProxy(policyTrusting(pki.caFile, "", `network:\n  default: allow\n  allow_ips: [127.0.0.1/32]\n  rules:\n    - { name: no-admin, action: deny, hosts: [localhost], ports: [${h2Up.port}], paths: ["/admin/**"] }\n`));
    try {
      const { session } = await h2ThroughProxy(denying.port, "localhost", h2Up.port, denying.caPem);
      const answer = await h2Request(session, { ":path": "/admin/x" });
      expect(answer.status).toBe(403);
      expect(answer.headers["x-portcullis-error"]).toBe("policy_denied");
      expect(JSON.parse(answer.body.toString()).error).toMatchObject({ type: "policy_denied", rule: "no-admin" });
      expect(await denying.audit.waitFor((l) => l.path === "/admin/x")).toMatchObject({ msg: "denied", http_version: "2" });
      session.close();
    } finally {
      await denying.close();
    }
  });

  it("offers only http/1.1 when proxy.http2 is false, and advertises max_concurrent_streams", async () => {
    const h1Only = await startProxy(`proxy:\n  http2: false\n${policyTrusting(pki.caFile)}`);
    const limited = await startProxy(`proxy:\n  max_concurrent_streams: 3\n${policyTrusting(pki.caFile)}`);
    try {
      const socket = await openConnect(h1Only.port, `localhost:${h2Up.port}`);
      const tls = await new Promise<TLSSocket>((resolve, reject) => {
        const secure = tlsConnect({ socket, servername: "localhost", ca: h1Only.caPem, ALPNProtocols: ["h2", "http/1.1"] });
        secure.once("secureConnect", () => resolve(secure)).once("error", reject);
      });
      expect(tls.alpnProtocol).toBe("http/1.1");
      tls.destroy();
      const { session } = await h2ThroughProxy(limited.port, "localhost", h2Up.port, limited.caPem);
      await new Promise<void>((resolve) => (session.remoteSettings.maxConcurrentStreams === 3 ? resolve() : session.once("remoteSettings", () => resolve())));
      expect(session.remoteSettings.maxConcurrentStreams).toBe(3);
      session.close();
    } finally {
      await h1Only.close();
      await limited.close();
    }
  });
});


/** An HTTP/1.1 POST with a chunked body and trailers through the proxy; the response's trailers. */
function h1WithTrailers(port: number, path: string): Promise<{ body: { trailers: unknown }; responseTrailers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    openConnect(proxy.port, `localhost:${port}`).then((socket: Socket) => {
      const req = https.request({ host: "localhost", port, path, method: "POST", ca: proxy.caPem, servername: "localhost", createConnection: () => tlsConnect({ socket, servername: "localhost", ca: proxy.caPem, ALPNProtocols: ["http/1.1"] }), headers: { "Transfer-Encoding": "chunked", Trailer: "X-Client-Trailer", TE: "trailers" } });
      req.on("response", (res: http.IncomingMessage) => {
        void readStream(res).then((body) => resolve({ body: JSON.parse(body.toString()), responseTrailers: res.trailers }));
      });
      req.on("error", reject);
      req.write("body");
      req.addTrailers({ "X-Client-Trailer": "from-client" });
      req.end();
    }, reject);
  });
}
