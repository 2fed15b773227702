import http2, { type ServerHttp2Stream } from "node:http2";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { performance } from "node:perf_hooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { h2Request, h2ThroughProxy, startH2Upstream, type H2Upstream } from "./helpers/h2.js";
import { FLAG, FRAME, FrameReader, PREFACE, frame, requestBlock } from "./helpers/h2-frames.js";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { openConnect } from "./helpers/tunnel.js";

/** Limits and attacks: each closes that client's connection (GOAWAY); every other client carries on. */
let pki: ServerPki;
let upstream: H2Upstream;
let proxy: TestProxy;
/** A proxy with a short handshake timeout, for the client that never acknowledges SETTINGS. */
let strict: TestProxy;
let upstreamStreams = 0;

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startH2Upstream(pki, (stream: ServerHttp2Stream, headers) => {
    upstreamStreams++;
    if (String(headers[":path"]).startsWith("/hold")) return;
    stream.respond({ ":status": 200 });
    stream.end("ok");
  });
  proxy = await startProxy(policyTrusting(pki.caFile));
  strict = await startProxy(policyTrusting(pki.caFile), { timeouts: { headersMs: 400 } });
});

afterAll(async () => {
  await proxy?.close();
  await strict?.close();
  await upstream?.close();
});

/** A TLS connection through the proxy that speaks raw h2 frames; resolves once the handshake is done. */
async function rawH2(through: TestProxy = proxy): Promise<{ tls: TLSSocket; reader: FrameReader; closed: Promise<void> }> {
  const socket = await openConnect(through.port, `localhost:${upstream.port}`);
  const tls = await new Promise<TLSSocket>((resolve, reject) => {
    const secure = tlsConnect({ socket, servername: "localhost", ca: through.caPem, ALPNProtocols: ["h2"] });
    secure.once("secureConnect", () => resolve(secure)).once("error", reject);
  });
  const reader = new FrameReader();
  tls.on("data", (chunk: Buffer) => reader.push(chunk));
  tls.on("error", () => undefined);
  const closed = new Promise<void>((resolve) => tls.once("close", () => resolve()));
  return { tls, reader, closed };
}

/** Another client's request times while something else is going on. */
async function latencies(count: number): Promise<number[]> {
  const { session } = await h2ThroughProxy(proxy.port, "localhost", upstream.port, proxy.caPem);
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    const answer = await h2Request(session, { ":path": `/bystander/${i}` });
    expect(answer.body.toString()).toBe("ok");
    out.push(performance.now() - started);
  }
  session.close();
  return out;
}

describe("h2 limits", () => {
  it("closes a connection that floods stream resets (rapid reset); the upstream sees no flood and another client keeps its latency", { timeout: 30_000 }, async () => {
    const baseline = await latencies(20);
    const before = upstreamStreams;
    const { session } = await h2ThroughProxy(proxy.port, "localhost", upstream.port, proxy.caPem);
    const goaway = new Promise<number>((resolve) => session.once("goaway", (code: number) => resolve(code)));
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    const during = latencies(20);
    let sent = 0;
    while (!session.closed && !session.destroyed && sent < 5000) {
      const stream = session.request({ ":path": `/hold/${sent}` });
      stream.on("error", () => undefined);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      sent++;
      // Let frames go out and the proxy's GOAWAY come in, every so often.
      if (sent % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    await closed;
    const bystander = await during;
    // The flood stopped well short of what the client sent, and the upstream saw at most that.
    expect(upstreamStreams - before - 40).toBeLessThan(600);
    expect(Math.max(...bystander)).toBeLessThan(Math.max(500, 20 * Math.max(...baseline)));
    expect(await proxy.diagnostics.waitFor((l) => String(l.msg).includes("rapid reset"))).toBeTruthy();
  });

  it("closes a connection that never acknowledges SETTINGS", async () => {
    const { tls, reader, closed } = await rawH2(strict);
    // Preface and our SETTINGS, but never the ACK of the proxy's.
    tls.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]));
    await closed;
    expect(reader.goaway()?.code).toBe(http2.constants.NGHTTP2_SETTINGS_TIMEOUT);
  });

  it("closes a connection that sends a CONTINUATION flood", async () => {
    const { tls, reader, closed } = await rawH2();
    tls.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), frame(FRAME.SETTINGS, FLAG.ACK, 0)]));
    const block = requestBlock(`localhost:${upstream.port}`, "/continuation");
    const flood = [frame(FRAME.HEADERS, 0, 1, block)];
    for (let i = 0; i < 2000; i++) flood.push(frame(FRAME.CONTINUATION, 0, 1, requestBlock("x", "/y", [[`x-pad-${i}`, "v".repeat(20)]]).subarray(0, 30)));
    tls.write(Buffer.concat(flood), () => undefined);
    await closed;
    expect(reader.goaway()).toBeDefined();
    expect(await latencies(3)).toHaveLength(3);
  });

  it("refuses an oversized header block and closes that connection; others carry on", async () => {
    const { tls, reader, closed } = await rawH2();
    tls.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), frame(FRAME.SETTINGS, FLAG.ACK, 0)]));
    const huge = requestBlock(`localhost:${upstream.port}`, "/huge", Array.from({ length: 8 }, (_, i): [string, string] => [`x-big-${i}`, "v".repeat(12_000)]));
    // Sent in frames of at most 16 KiB, the default SETTINGS_MAX_FRAME_SIZE.
    const parts: Buffer[] = [];
    for (let offset = 0; offset < huge.length; offset += 16_384) {
      const last = offset + 16_384 >= huge.length;
      parts.push(frame(offset === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, (last ? FLAG.END_HEADERS : 0) | (offset === 0 ? FLAG.END_STREAM : 0), 1, huge.subarray(offset, offset + 16_384)));
    }
    tls.write(Buffer.concat(parts));
    const refused = await Promise.race([closed.then(() => "closed"), waitForFrame(reader, tls, (f) => f.type === FRAME.RST_STREAM && f.streamId === 1).then(() => "reset")]);
    expect(["closed", "reset"]).toContain(refused);
    expect(proxy.audit.lines.some((l) => l.path === "/huge")).toBe(false);
    tls.destroy();
    expect(await latencies(3)).toHaveLength(3);
  });
});

function waitForFrame(reader: FrameReader, tls: TLSSocket, match: (f: FrameReader["frames"][number]) => boolean): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (reader.frames.some(match)) {
        tls.off("data", check);
        resolve();
      }
    };
    tls.on("data", check);
    check();
  });
}
