import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { connect, createServer, type AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { sendBytes, startUpstream, type TestUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let upstream: TestUpstream;
let plainUpstream: TestUpstream;
let proxy: TestProxy;
const MiB = 1024 * 1024;
const bigBody = randomBytes(MiB);

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

beforeAll(async () => {
  pki = await makeUpstreamPki();
  const handler: http.RequestListener = (req, res) => {
    const url = new URL(req.url ?? "/", "https://x");
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      switch (url.pathname) {
        case "/echo":
          res.writeHead(200, { "Content-Type": "application/json", "X-Upstream": "yes" });
          res.end(JSON.stringify({ method: req.method, url: req.url, rawHeaders: req.rawHeaders, bodyHash: sha256(body), length: body.length, trailers: req.rawTrailers }));
          return;
        case "/status": {
          const code = Number(url.searchParams.get("code"));
          if (code === 204 || code === 304) res.writeHead(code, { ETag: '"v1"' }).end();
          else res.writeHead(code, { "Content-Type": "text/plain" }).end(`body of ${code}`);
          return;
        }
        case "/big": {
          sendBytes(res, Number(url.searchParams.get("mib")) * MiB);
          return;
        }
        case "/flood": {
          // 128 MiB as fast as the reader lets it go; floodSent says how far it got.
          const total = 128 * MiB;
          res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": String(total) });
          const chunk = Buffer.alloc(64 * 1024, 3);
          const pump = () => {
            while (floodSent < total) {
              floodSent += chunk.length;
              if (!res.write(chunk)) return res.once("drain", pump);
            }
            res.end();
          };
          res.on("close", () => res.removeAllListeners("drain"));
          pump();
          return;
        }
        case "/sse":
          res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
          res.write("data: first\n\n");
          // The second event waits until the test says the first one arrived.
          req.socket.once("data", () => undefined);
          sseRelease.then(() => res.end("data: last\n\n"));
          return;
        case "/hop":
          res.writeHead(200, [
            "Connection", "X-Hop-Response, keep-alive",
            "X-Hop-Response", "secret-hop",
            "Keep-Alive", "timeout=5",
            "Proxy-Authenticate", "Basic",
            "X-End-To-End", "kept",
          ]);
          res.end("ok");
          return;
        case "/case":
          res.writeHead(200, ["X-MiXeD-CaSe", "1", "x-lower", "2", "X-MiXeD-CaSe", "3"]);
          res.end("ok");
          return;
        case "/slow":
          // Never answers within the proxy's response timeout.
          return;
        case "/reset":
          res.writeHead(200, { "Content-Length": String(MiB) });
          res.write(Buffer.alloc(1000, 1), () => req.socket.destroy());
          return;
        case "/trailers":
          res.writeHead(200, { "Content-Type": "text/plain", Trailer: "X-Checksum" });
          res.write("part");
          res.addTrailers({ "X-Checksum": "abc123" });
          res.end();
          return;
        case "/continue":
          res.writeHead(200, { "Content-Type": "application/json" });
          res.end(JSON.stringify({ length: body.length }));
          return;
        case "/request-id":
          res.writeHead(200, { "X-Request-Id": "upstream-made-this" });
          res.end(String(req.headers["x-request-id"]));
          return;
        default:
          res.writeHead(404).end("not found");
      }
    });
  };
  upstream = await startUpstream(handler, pki);
  plainUpstream = await startUpstream(handler);
  proxy = await startProxy(policyTrusting(pki.caFile, "log:\n  capture_body_bytes: 64\n"));
});

let floodSent = 0;
let releaseSse!: () => void;
const sseRelease = new Promise<void>((resolve) => (releaseSse = resolve));

afterAll(async () => {
  releaseSse();
  await proxy?.close();
  await upstream?.close();
  await plainUpstream?.close();
});

const origin = () => `https://localhost:${upstream.port}`;

describe("HTTP through CONNECT", () => {
  it.each(["GET", "POST", "PUT", "DELETE", "PATCH"])("%s with a body reaches the upstream intact", async (method) => {
    const body = method === "GET" ? undefined : `payload for ${method}`;
    const res = await request(`${origin()}/echo?q=1`, { method: method as "GET", body, dispatcher: proxy.dispatcher, headers: { "content-type": "text/plain" } });
    expect(res.statusCode).toBe(200);
    const echoed = (await res.body.json()) as { method: string; url: string; bodyHash: string };
    expect(echoed.method).toBe(method);
    expect(echoed.url).toBe("/echo?q=1");
    expect(echoed.bodyHash).toBe(sha256(Buffer.from(body ?? "")));
  });

  it("streams a 1 MiB request body and the upstream gets the same bytes", async () => {
    const res = await request(`${origin()}/echo`, { method: "POST", body: bigBody, dispatcher: proxy.dispatcher });
    const echoed = (await res.body.json()) as { bodyHash: string; length: number };
    expect(echoed.length).toBe(MiB);
    expect(echoed.bodyHash).toBe(sha256(bigBody));
    const line = await proxy.audit.waitFor((l) => l.path === "/echo" && l.req_bytes === MiB);
    expect(line.msg).toBe("http");
  });

  it("streams a 50 MiB response", async () => {
    const res = await request(`${origin()}/big?mib=50`, { dispatcher: proxy.dispatcher });
    let total = 0;
    for await (const chunk of res.body) total += (chunk as Buffer).length;
    expect(total).toBe(50 * MiB);
    const line = await proxy.audit.waitFor((l) => l.path === "/big?mib=50");
    expect(line.resp_bytes).toBe(50 * MiB);
  });

  it("applies backpressure: a client that stops reading stops the upstream too", async () => {
    const res = await request(`${origin()}/flood`, { dispatcher: proxy.dispatcher });
    const iterator = res.body[Symbol.asyncIterator]();
    await iterator.next();
    // The client reads no more. Wait until the upstream has stalled, then see how far it got.
    let last = -1;
    await expect
      .poll(
        () => {
          const stalled = floodSent === last;
          last = floodSent;
          return stalled;
        },
        { timeout: 15_000, interval: 300 },
      )
      .toBe(true);
    // Socket buffers on three connections account for a few MiB; without backpressure the proxy would read all 128.
    expect(floodSent).toBeLessThan(48 * MiB);
    await iterator.return?.();
  });

  it("keeps one tunnel alive for 50 requests", async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const { HttpsProxyAgent } = await import("https-proxy-agent");
    const tunnelAgent = new HttpsProxyAgent(proxy.url, { keepAlive: true, maxSockets: 1 });
    let connects = 0;
    const originalConnect = tunnelAgent.connect.bind(tunnelAgent);
    tunnelAgent.connect = (req, opts) => {
      connects++;
      return originalConnect(req, opts);
    };
    for (let i = 0; i < 50; i++) {
      const status = await new Promise<number>((resolve, reject) => {
        https
          .get(`${origin()}/echo?i=${i}`, { agent: tunnelAgent, ca: proxy.caPem }, (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode ?? 0));
          })
          .on("error", reject);
      });
      expect(status).toBe(200);
    }
    expect(connects).toBe(1);
    const lines = proxy.audit.lines.filter((l) => String(l.path).startsWith("/echo?i="));
    expect(new Set(lines.map((l) => l.client_addr)).size).toBe(1);
    tunnelAgent.destroy();
    agent.destroy();
  });

  it.each([204, 304, 404, 500])("relays status %i with its body", async (code) => {
    const res = await request(`${origin()}/status?code=${code}`, { dispatcher: proxy.dispatcher });
    expect(res.statusCode).toBe(code);
    const text = await res.body.text();
    expect(text).toBe(code === 204 || code === 304 ? "" : `body of ${code}`);
    if (code === 304) expect(res.headers.etag).toBe('"v1"');
  });

  it("preserves header case, order and custom headers both ways", async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = https.request(`${origin()}/echo`, {
        agent: proxy.agent(),
        ca: proxy.caPem,
        headers: [["Host", `localhost:${upstream.port}`], ["X-Custom-Header", "one"], ["x-lower-case", "two"], ["X-Custom-Header", "three"]].flat() as unknown as http.OutgoingHttpHeaders,
      }, resolve);
      req.on("error", reject).end();
    });
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    const echoed = JSON.parse(Buffer.concat(chunks).toString()) as { rawHeaders: string[] };
    const names = echoed.rawHeaders.filter((_, i) => i % 2 === 0);
    expect(names).toEqual(expect.arrayContaining(["X-Custom-Header", "x-lower-case"]));
    const custom = echoed.rawHeaders.flatMap((v, i) => (i % 2 === 0 && v === "X-Custom-Header" ? [echoed.rawHeaders[i + 1]] : []));
    expect(custom).toEqual(["one", "three"]);
    expect(names.indexOf("X-Custom-Header")).toBeLessThan(names.indexOf("x-lower-case"));

    const caseRes = await new Promise<http.IncomingMessage>((resolve, reject) =>
      https.get(`${origin()}/case`, { agent: proxy.agent(), ca: proxy.caPem }, resolve).on("error", reject),
    );
    caseRes.resume();
    const responseNames = caseRes.rawHeaders.filter((_, i) => i % 2 === 0);
    expect(responseNames.slice(0, 3)).toEqual(["X-MiXeD-CaSe", "x-lower", "X-MiXeD-CaSe"]);
  });

  it("strips hop-by-hop headers both ways and adds no Via or X-Forwarded-For", async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = https.request(`${origin()}/echo`, {
        agent: proxy.agent(),
        ca: proxy.caPem,
        headers: { Connection: "X-Hop-Request, keep-alive", "X-Hop-Request": "drop-me", "Keep-Alive": "timeout=9", "Proxy-Connection": "keep-alive", TE: "gzip", "X-End-To-End": "kept" },
      }, resolve);
      req.on("error", reject).end();
    });
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    const echoed = JSON.parse(Buffer.concat(chunks).toString()) as { rawHeaders: string[] };
    const names = echoed.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    for (const hop of ["x-hop-request", "keep-alive", "proxy-connection", "te", "proxy-authorization", "via", "x-forwarded-for", "forwarded"]) {
      expect(names).not.toContain(hop);
    }
    expect(names).toContain("x-end-to-end");

    const hop = await request(`${origin()}/hop`, { dispatcher: proxy.dispatcher });
    await hop.body.text();
    expect(hop.headers["x-hop-response"]).toBeUndefined();
    expect(hop.headers["proxy-authenticate"]).toBeUndefined();
    expect(hop.headers["x-end-to-end"]).toBe("kept");
  });

  it("delivers the first server-sent event before the stream ends", async () => {
    const res = await request(`${origin()}/sse`, { dispatcher: proxy.dispatcher });
    const iterator = res.body[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect(Buffer.from(first.value as Buffer).toString()).toBe("data: first\n\n");
    releaseSse();
    let rest = "";
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) rest += Buffer.from(next.value as Buffer).toString();
    expect(rest).toBe("data: last\n\n");
  });

  it("relays response trailers", async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
      https.get(`${origin()}/trailers`, { agent: proxy.agent(), ca: proxy.caPem }, resolve).on("error", reject),
    );
    let body = "";
    for await (const chunk of res) body += chunk;
    expect(body).toBe("part");
    expect(res.trailers["x-checksum"]).toBe("abc123");
  });

  it("relays request trailers", async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = https.request(`${origin()}/echo`, { method: "POST", agent: proxy.agent(), ca: proxy.caPem, headers: { Trailer: "X-Req-Sum", "Transfer-Encoding": "chunked" } }, resolve);
      req.on("error", reject);
      req.write("abc");
      // The ones a trailer may not carry (RFC 9110 6.5.1) are dropped: routing, authentication,
      // connection settings (Node's parser itself refuses a Content-Length trailer).
      req.addTrailers([
        ["X-Req-Sum", "s1"],
        ["Host", "evil.example"],
        ["Authorization", "Bearer from-a-trailer"],
        ["Cookie", "session=1"],
        ["HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA"],
      ]);
      req.end();
    });
    let body = "";
    for await (const chunk of res) body += chunk;
    expect((JSON.parse(body) as { trailers: string[] }).trailers).toEqual(["X-Req-Sum", "s1"]);
  });

  it("passes Expect: 100-continue through and lets the upstream answer it", async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = https.request(`${origin()}/continue`, { method: "POST", agent: proxy.agent(), ca: proxy.caPem, headers: { Expect: "100-continue", "Content-Length": "5" } }, resolve);
      req.on("error", reject);
      req.on("continue", () => req.end("hello"));
    });
    let body = "";
    for await (const chunk of res) body += chunk;
    expect(JSON.parse(body)).toEqual({ length: 5 });
  });

  it("keeps the client's X-Request-Id, sends it upstream and returns it", async () => {
    const res = await request(`${origin()}/request-id`, { dispatcher: proxy.dispatcher, headers: { "x-request-id": "client-id-42" } });
    expect(await res.body.text()).toBe("client-id-42");
    expect(res.headers["x-request-id"]).toBe("client-id-42");
    const made = await request(`${origin()}/request-id`, { dispatcher: proxy.dispatcher });
    const upstreamSaw = await made.body.text();
    expect(upstreamSaw).toMatch(/^[0-9a-f-]{36}$/);
    expect(made.headers["x-request-id"]).toBe(upstreamSaw);
    const line = await proxy.audit.waitFor((l) => l.req_id === upstreamSaw);
    expect(line.path).toBe("/request-id");
  });

  it("writes one audit line with the SPEC fields, headers redacted and a body sample", async () => {
    const res = await request(`${origin()}/echo?audit=1`, {
      method: "POST",
      dispatcher: proxy.dispatcher,
      body: JSON.stringify({ hello: "world" }),
      headers: { "content-type": "application/json", authorization: "Bearer agent-held-token", cookie: "sid=abc", "x-request-id": "audit-1" },
    });
    await res.body.text();
    const line = await proxy.audit.waitFor((l) => l.req_id === "audit-1");
    expect(line).toMatchObject({
      msg: "http",
      level: 30,
      method: "POST",
      scheme: "https",
      host: "localhost",
      port: upstream.port,
      path: "/echo?audit=1",
      status: 200,
      decision: "allow",
      credentials: [],
      placeholders: [],
      req_body: '{"hello":"world"}',
    });
    expect(typeof line.time).toBe("number");
    expect(line.duration_ms).toBeGreaterThanOrEqual(0);
    expect(line.req_bytes).toBe(17);
    expect(line.resp_bytes).toBeGreaterThan(0);
    expect(line.client_addr).toMatch(/^127\.0\.0\.1:\d+$/);
    const headers = line.req_headers as Record<string, string>;
    expect(headers.authorization).toBe("[REDACTED]");
    expect(headers.cookie).toBe("[REDACTED]");
    expect(JSON.stringify(line)).not.toContain("agent-held-token");
    expect(proxy.audit.lines.filter((l) => l.req_id === "audit-1")).toHaveLength(1);
  });

  it("does not sample binary bodies and cuts text samples at capture_body_bytes", async () => {
    await (await request(`${origin()}/echo?bin=1`, { method: "POST", dispatcher: proxy.dispatcher, body: Buffer.alloc(100, 1), headers: { "content-type": "application/octet-stream" } })).body.text();
    await (await request(`${origin()}/echo?txt=1`, { method: "POST", dispatcher: proxy.dispatcher, body: "x".repeat(100), headers: { "content-type": "text/plain" } })).body.text();
    const bin = await proxy.audit.waitFor((l) => l.path === "/echo?bin=1");
    const txt = await proxy.audit.waitFor((l) => l.path === "/echo?txt=1");
    expect(bin.req_body).toBeUndefined();
    expect(txt.req_body).toBe("x".repeat(64));
  });
});

describe("plain HTTP", () => {
  it("runs absolute-form http:// requests through the pipeline", async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port: proxy.port, method: "POST", path: `http://127.0.0.1:${plainUpstream.port}/echo?plain=1`, headers: { Host: "ignored.example" } }, resolve);
      req.on("error", reject).end("plain body");
    });
    let body = "";
    for await (const chunk of res) body += chunk;
    const echoed = JSON.parse(body) as { url: string; rawHeaders: string[]; bodyHash: string };
    expect(res.statusCode).toBe(200);
    expect(echoed.url).toBe("/echo?plain=1");
    expect(echoed.bodyHash).toBe(sha256(Buffer.from("plain body")));
    // RFC 9112 3.2.2: the proxy replaces Host with the request-target's authority.
    expect(echoed.rawHeaders[echoed.rawHeaders.findIndex((v) => v.toLowerCase() === "host") + 1]).toBe(`127.0.0.1:${plainUpstream.port}`);
    const line = await proxy.audit.waitFor((l) => l.path === "/echo?plain=1");
    expect(line).toMatchObject({ scheme: "http", host: "127.0.0.1", port: plainUpstream.port });
  });

  it("serves plain HTTP inside a CONNECT tunnel", async () => {
    const socket = connect(proxy.port, "127.0.0.1");
    socket.write(`CONNECT 127.0.0.1:${plainUpstream.port} HTTP/1.1\r\nHost: 127.0.0.1:${plainUpstream.port}\r\n\r\n`);
    let buffer = "";
    await new Promise<void>((resolve) => {
      const onData = (chunk: Buffer) => {
        buffer += chunk.toString();
        if (buffer.includes("\r\n\r\n") && !buffer.includes("HTTP/1.1 200 OK")) {
          if (buffer.startsWith("HTTP/1.1 200 Connection Established")) {
            buffer = "";
            socket.write(`GET /echo?tunnel=plain HTTP/1.1\r\nHost: 127.0.0.1:${plainUpstream.port}\r\nConnection: close\r\n\r\n`);
          }
        }
        if (buffer.includes("HTTP/1.1 200 OK")) {
          socket.off("data", onData);
          socket.once("end", () => resolve());
          socket.on("data", (more: Buffer) => (buffer += more.toString()));
        }
      };
      socket.on("data", onData);
    });
    expect(buffer).toContain('"url":"/echo?tunnel=plain"');
    socket.destroy();
  });

  it("refuses an origin-form request on the listener with 400", async () => {
    const res = await request(`${proxy.url}/not-a-proxy-request`);
    expect(res.statusCode).toBe(400);
    expect(res.headers["x-portcullis-error"]).toBe("bad_request");
    await res.body.text();
  });
});

describe("errors portcullis answers", () => {
  it("refuses a Host header that names another host than the tunnel (400)", async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = https.request(`${origin()}/echo`, { agent: proxy.agent(), ca: proxy.caPem, servername: "localhost", headers: { Host: "evil.example" } }, resolve);
      req.on("error", reject).end();
    });
    let body = "";
    for await (const chunk of res) body += chunk;
    expect(res.statusCode).toBe(400);
    expect(res.headers["x-portcullis-error"]).toBe("bad_request");
    const parsed = JSON.parse(body) as { error: { type: string; message: string; request_id: string } };
    expect(parsed.error.type).toBe("bad_request");
    expect(parsed.error.message).toContain("evil.example");
    expect(upstream.seen.some((seen) => seen.rawHeaders.includes("evil.example"))).toBe(false);
    const line = await proxy.audit.waitFor((l) => l.req_id === parsed.error.request_id);
    expect(line).toMatchObject({ status: 400, error: { type: "bad_request" }, level: 40 });
  });

  it.each([
    ["a second Host header", (port: number) => `GET /echo HTTP/1.1\r\nHost: localhost:${port}\r\nHost: evil.example\r\n\r\n`, "more than one Host"],
    // Node's req.headers and headersDistinct keep only the first 1,000 headers; the raw list the request is forwarded with keeps them all.
    ["a second Host header after 1,000 others", (port: number) => `GET /echo HTTP/1.1\r\nHost: localhost:${port}\r\n${"X-Pad: 1\r\n".repeat(1000)}Host: evil.example\r\n\r\n`, "more than one Host"],
    ["OPTIONS * with another Host", () => "OPTIONS * HTTP/1.1\r\nHost: evil.example\r\n\r\n", "evil.example"],
    ["an absolute URL for another host", () => "GET https://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n", "evil.example"],
  ])("refuses %s inside a tunnel (400)", async (_name, raw, reason) => {
    const { rawExchange } = await import("./helpers/tunnel.js");
    const before = upstream.seen.length;
    const text = await rawExchange(proxy.port, "localhost", upstream.port, proxy.caPem, raw(upstream.port));
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(text).toContain(reason);
    expect(upstream.seen.length).toBe(before);
  });

  it("answers 502 upstream_unreachable when the upstream refuses connections", async () => {
    const closed = await startUpstream((_req, res) => res.end());
    const port = closed.port;
    await closed.close();
    const res = await request(`https://localhost:${port}/x`, { dispatcher: proxy.dispatcher });
    expect(res.statusCode).toBe(502);
    expect(res.headers["x-portcullis-error"]).toBe("upstream_unreachable");
    const body = (await res.body.json()) as { error: { type: string; message: string; rule: null; request_id: string } };
    expect(body.error).toMatchObject({ type: "upstream_unreachable", rule: null });
    expect(body.error.message).toContain("ECONNREFUSED");
    const line = await proxy.audit.waitFor((l) => l.req_id === body.error.request_id);
    expect(line).toMatchObject({ status: 502, level: 50, error: { type: "upstream_unreachable" } });
  });

  it("answers 502 upstream_tls_error for an upstream certificate nobody trusts", async () => {
    const stranger = await makeUpstreamPki("stranger");
    const untrusted = await startUpstream((_req, res) => res.end("should never be read"), stranger);
    try {
      const res = await request(`https://localhost:${untrusted.port}/`, { dispatcher: proxy.dispatcher });
      expect(res.statusCode).toBe(502);
      const body = (await res.body.json()) as { error: { type: string; message: string } };
      expect(body.error.type).toBe("upstream_tls_error");
      expect(body.error.message).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED/);
      expect(untrusted.seen).toHaveLength(0);
    } finally {
      await untrusted.close();
    }
  });

  it("answers 502 upstream_unreachable within connect_timeout when the upstream never completes its handshake", async () => {
    // Accepts TCP, never speaks TLS: the connect timer covers TCP and TLS.
    const silent = createServer((socket) => socket.on("error", () => undefined).resume());
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const quick = await startProxy(policyTrusting(pki.caFile).replace("connect_timeout: 2s", "connect_timeout: 300ms"));
    try {
      const started = Date.now();
      const res = await request(`https://localhost:${(silent.address() as AddressInfo).port}/`, { dispatcher: quick.dispatcher });
      expect(res.statusCode).toBe(502);
      const body = (await res.body.json()) as { error: { type: string; message: string } };
      expect(body.error.type).toBe("upstream_unreachable");
      expect(body.error.message).toMatch(/timed out after 300ms/);
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      await quick.close();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it("pools upstream connections across tunnels", async () => {
    const connections = new Set<unknown>();
    const onRequest = (req: http.IncomingMessage) => {
      if (req.url?.startsWith("/echo?pool=")) connections.add(req.socket);
    };
    upstream.server.on("request", onRequest);
    try {
      for (let i = 0; i < 5; i++) {
        // A fresh client (and so a fresh tunnel) each time.
        const agent = proxy.agent();
        await new Promise<void>((resolve, reject) =>
          https.get(`${origin()}/echo?pool=${i}`, { agent, ca: proxy.caPem }, (res) => (res.resume(), res.on("end", () => resolve()))).on("error", reject),
        );
        agent.destroy();
      }
      const tunnels = new Set(proxy.audit.lines.filter((l) => String(l.path).startsWith("/echo?pool=")).map((l) => l.client_addr));
      expect(tunnels.size).toBe(5);
      expect(connections.size).toBe(1);
    } finally {
      upstream.server.off("request", onRequest);
    }
  });

  it("answers 504 upstream_timeout when the response headers do not come in time", async () => {
    const quick = await startProxy(policyTrusting(pki.caFile).replace("response_timeout: 5s", "response_timeout: 300ms"));
    try {
      const res = await request(`${origin()}/slow`, { dispatcher: quick.dispatcher });
      expect(res.statusCode).toBe(504);
      expect(res.headers["x-portcullis-error"]).toBe("upstream_timeout");
      await res.body.text();
    } finally {
      await quick.close();
    }
  });

  it("breaks the client's transfer when the upstream resets mid-body", async () => {
    const res = await request(`${origin()}/reset`, { dispatcher: proxy.dispatcher });
    expect(res.statusCode).toBe(200);
    await expect(res.body.arrayBuffer()).rejects.toThrow();
    const line = await proxy.audit.waitFor((l) => l.path === "/reset");
    expect(line.error).toMatchObject({ type: "upstream_protocol_error" });
  });

  it("aborts the upstream request when the client disconnects", async () => {
    let upstreamClosed!: () => void;
    const closedPromise = new Promise<void>((resolve) => (upstreamClosed = resolve));
    const hanging = await startUpstream((req, res) => {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.write("started");
      res.on("close", () => upstreamClosed());
      void req;
    }, pki);
    try {
      const controller = new AbortController();
      const res = await request(`https://localhost:${hanging.port}/`, { dispatcher: proxy.dispatcher, signal: controller.signal });
      const iterator = res.body[Symbol.asyncIterator]();
      await iterator.next();
      controller.abort();
      await closedPromise;
      const line = await proxy.audit.waitFor((l) => l.port === hanging.port);
      expect(line.error).toMatchObject({ type: "client_closed" });
    } finally {
      await hanging.close();
    }
  });
});
