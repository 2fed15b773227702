import http2, { type Http2SecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UpstreamResponse } from "../src/core/messages.js";
import type { ProxyError } from "../src/core/errors.js";
import { openHttp2Connection, sendHttp2, type Http2Connection } from "../src/transport/upstream/http2.js";
import type { UpstreamSettings } from "../src/transport/upstream/settings.js";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";

// Node keeps a finished ClientHttp2Stream reachable from the old generation until a full
// collection (ClientHttp2Session.request's AsyncResource.bind, DEP0172), and whatever its
// listeners close over with it: the whole exchange, promoted by every young collection
// (bench/RESULTS.md). Once closed, the stream must hold no listener of portcullis' but the
// one that keeps a late error harmless.

let pki: ServerPki;
let server: Http2SecureServer;
let connection: Http2Connection;

beforeAll(async () => {
  pki = await makeUpstreamPki();
  server = http2.createSecureServer({ key: pki.key, cert: pki.ipCert, SNICallback: pki.sniCallback, allowHTTP1: false });
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200, "content-type": "text/plain" });
    stream.end("hello");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca: pki.caPem, ALPNProtocols: ["h2"] });
  await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
  connection = openHttp2Connection({ scheme: "https", host: "localhost", port }, socket, () => undefined);
  await connection.ready;
});

afterAll(async () => {
  connection?.session.destroy();
  await new Promise<void>((resolve) => server?.close(() => resolve()));
});

describe("an h2 upstream stream, once closed", () => {
  it("lets go of every listener that closes over the exchange", async () => {
    const settings = { connectMs: 5_000, responseMs: 5_000 } as UpstreamSettings;
    const target = { scheme: "https" as const, host: "localhost", port: (server.address() as AddressInfo).port };
    const answered = new Promise<UpstreamResponse>((resolve, reject) => {
      sendHttp2(connection, settings, target, { method: "GET", path: "/", headers: ["Host", `localhost:${target.port}`], hasBody: false }, {
        sent: () => undefined,
        continue: () => undefined,
        response: resolve,
        upgraded: () => reject(new Error("not an upgrade")),
        error: (error: ProxyError) => reject(error),
      }).end();
    });
    const response = await answered;
    expect(response.status).toBe(200);
    const stream = response.body;
    let body = "";
    stream.on("data", (chunk: Buffer) => (body += chunk.toString()));
    await new Promise<void>((resolve) => stream.once("close", resolve));
    expect(body).toBe("hello");
    expect(response.complete).toBe(true);
    // The listeners go after every 'close' listener has run: one turn of the event loop later.
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(stream.eventNames()).toEqual(["error"]);
    expect(stream.listenerCount("error")).toBe(1);
    // A late error has a listener: it does not crash the process.
    expect(() => stream.emit("error", new Error("late"))).not.toThrow();
  });
});
