import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import http2 from "node:http2";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { h2cThroughProxy, h2Request, h2ThroughProxy, readStream } from "./helpers/h2.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { startUpstream, startWsUpstream, type TestUpstream, type TestWsUpstream } from "./helpers/upstream.js";

const run = promisify(execFile);
let pki: ServerPki;
let wsUp: TestWsUpstream;
let plain: TestUpstream;
let proxy: TestProxy;
let caFile: string;

/** A masked client frame (RFC 6455 5.2). */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!));
  if (payload.length > 125) throw new Error("short frames only");
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), mask, masked]);
}

/** The first complete unmasked server frame in `data`. */
function serverFrame(data: Buffer): { opcode: number; payload: Buffer } | undefined {
  if (data.length < 2) return undefined;
  const length = data[1]! & 0x7f;
  if (data.length < 2 + length) return undefined;
  return { opcode: data[0]! & 0x0f, payload: data.subarray(2, 2 + length) };
}

beforeAll(async () => {
  pki = await makeUpstreamPki();
  wsUp = await startWsUpstream(pki, { handleProtocols: (protocols) => (protocols.has("chat") ? "chat" : false) });
  plain = await startUpstream((req, res) => void readStream(req).then((body) => res.writeHead(200, { "Content-Type": "text/plain" }).end(`plain ${req.method} ${req.url} ${body.length}`)));
  proxy = await startProxy(policyTrusting(pki.caFile));
  caFile = join(tempDir("h2-ws"), "proxy-ca.pem");
  writeFileSync(caFile, proxy.caPem);
});

afterAll(async () => {
  await proxy?.close();
  await wsUp?.close();
  await plain?.close();
});

/** One extended CONNECT (RFC 8441) through the proxy, answered with a body: its status and body. */
async function extendedConnect(port: number, path: string): Promise<{ status: number; body: string }> {
  const { session } = await h2ThroughProxy(proxy.port, "localhost", port, proxy.caPem);
  try {
    await new Promise<void>((resolve) => (session.remoteSettings.enableConnectProtocol ? resolve() : session.once("remoteSettings", () => resolve())));
    return await new Promise((resolve, reject) => {
      const stream = session.request({ ":method": "CONNECT", ":protocol": "websocket", ":scheme": "https", ":path": path, ":authority": `localhost:${port}` });
      stream.once("response", (h) => void readStream(stream).then((body) => resolve({ status: Number(h[":status"]), body: body.toString() })));
      stream.once("error", reject);
    });
  } finally {
    session.close();
  }
}

describe("WebSocket over h2 (RFC 8441) and h2 clients beyond Node", () => {
  it("bridges an extended CONNECT to the upstream's HTTP/1.1 Upgrade, with a key and accept of its own, and echoes both ways", async () => {
    const { session } = await h2ThroughProxy(proxy.port, "localhost", wsUp.port, proxy.caPem);
    await new Promise<void>((resolve) => (session.remoteSettings.enableConnectProtocol ? resolve() : session.once("remoteSettings", () => resolve())));
    expect(session.remoteSettings.enableConnectProtocol).toBe(true);
    const stream = session.request({ ":method": "CONNECT", ":protocol": "websocket", ":scheme": "https", ":path": "/chat?room=1", ":authority": `localhost:${wsUp.port}`, "sec-websocket-version": "13", "sec-websocket-protocol": "chat", origin: "https://app.example", "x-custom-auth": "abc" });
    const head = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => stream.once("response", resolve).once("error", reject));
    expect(head[":status"]).toBe(200);
    expect(head["sec-websocket-protocol"]).toBe("chat");
    expect(head["sec-websocket-accept"]).toBeUndefined();
    let received = Buffer.alloc(0);
    const echoed = new Promise<{ opcode: number; payload: Buffer }>((resolve) =>
      stream.on("data", (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
        const found = serverFrame(received);
        if (found) resolve(found);
      }),
    );
    stream.write(clientFrame(0x1, Buffer.from("hello over h2")));
    expect(await echoed).toEqual({ opcode: 1, payload: Buffer.from("hello over h2") });
    // The upstream got a real HTTP/1.1 handshake with every end-to-end header.
    const handshake = wsUp.seen.find((entry) => entry.url === "/chat?room=1")!;
    const names = handshake.rawHeaders.map((item) => item.toLowerCase());
    for (const header of ["sec-websocket-key", "sec-websocket-version", "upgrade", "origin", "x-custom-auth"]) expect(names).toContain(header);
    // A close frame, then the end of this side of the stream, as an RFC 8441 client does.
    stream.end(clientFrame(0x8, Buffer.from([0x03, 0xe8])));
    await new Promise<void>((resolve) => stream.once("close", () => resolve()));
    const line = await proxy.audit.waitFor((l) => l.msg === "websocket" && l.path === "/chat?room=1");
    expect(line).toMatchObject({ http_version: "2", upstream_version: "1.1", status: 200, method: "GET" });
    expect((line.ws as { close_code: number; protocol: string }).close_code).toBe(1000);
    session.close();
  });

  it("relays the upstream's refusal of an extended CONNECT as it was", async () => {
    // The ws server answers 400 to a handshake it cannot accept (no version).
    const answer = await extendedConnect(wsUp.port, "/refused");
    expect(answer.status).toBe(400);
  });

  it("answers 502 when the upstream answers an extended CONNECT with a 2xx but never switches (a 2xx is an open WebSocket to an h2 client)", async () => {
    // A TLS upstream with no 'upgrade' listener: Node answers the handshake as a plain request.
    const ignoring = await startUpstream((_req, res) => res.writeHead(200, { "Content-Type": "text/html" }).end("<p>plain page</p>"), pki);
    const answer = await extendedConnect(ignoring.port, "/ignores-upgrade");
    expect(answer.status).toBe(502);
    expect(answer.body).toContain("not 101");
    expect(answer.body).not.toContain("plain page");
    await ignoring.close();
  });

  it("takes h2 with prior knowledge on a plain-text tunnel", async () => {
    const session = await h2cThroughProxy(proxy.port, "127.0.0.1", plain.port);
    const answer = await h2Request(session, { ":path": "/prior", ":scheme": "http" });
    expect(answer.body.toString()).toBe("plain GET /prior 0");
    expect(await proxy.audit.waitFor((l) => l.path === "/prior")).toMatchObject({ http_version: "2", upstream_version: "1.1", scheme: "http" });
    session.close();
  });

  it("serves curl --http2 through the tunnel and curl --http2-prior-knowledge on a plain one", async () => {
    // The ws upstream answers 404 to page requests: the status and protocol are what count here.
    const ok = await run("curl", ["-sS", "--http2", "--cacert", caFile, "-x", proxy.url, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", `https://localhost:${wsUp.port}/page`]);
    expect(ok.stdout).toBe("2 404");
    const prior = await run("curl", ["-sS", "--http2-prior-knowledge", "-p", "-x", proxy.url, "-d", "abc", "-w", "|%{http_version}", `http://127.0.0.1:${plain.port}/curl-prior`]);
    expect(prior.stdout).toBe("plain POST /curl-prior 3|2");
    expect(await proxy.audit.waitFor((l) => l.path === "/curl-prior")).toMatchObject({ http_version: "2", method: "POST" });
  });
});
