import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import tls, { type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { preferredCiphers } from "../src/core/tls-ciphers.js";
import { makeUpstreamPki, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { openTlsTunnel } from "./helpers/tunnel.js";
import { closeServer, startUpstream, type TestUpstream } from "./helpers/upstream.js";

let pki: ServerPki;
let upstream: TestUpstream;
/** An upstream that picks by the client's order (nginx's default; a Node server picks by its own). */
let byClientOrder: https.Server;
const byClientOrderSockets = new Set<Socket>();
let proxy: TestProxy;
/** The suite each TLS connection byClientOrder accepted agreed on, in order. */
const upstreamCiphers: string[] = [];

beforeAll(async () => {
  pki = await makeUpstreamPki();
  upstream = await startUpstream((_req, res) => res.end("ok"), pki);
  byClientOrder = https.createServer({ key: pki.key, cert: pki.ipCert, honorCipherOrder: false }, (_req, res) => res.end("ok"));
  byClientOrder.on("secureConnection", (socket: TLSSocket) => {
    upstreamCiphers.push(socket.getCipher().name);
    byClientOrderSockets.add(socket);
    socket.once("close", () => byClientOrderSockets.delete(socket));
  });
  await new Promise<void>((resolve) => byClientOrder.listen(0, "127.0.0.1", resolve));
  proxy = await startProxy(policyTrusting(pki.caFile));
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
  if (byClientOrder) await closeServer(byClientOrder, byClientOrderSockets);
});

const AES128 = "TLS_AES_128_GCM_SHA256";
const AES256 = "TLS_AES_256_GCM_SHA384";
const CHACHA = "TLS_CHACHA20_POLY1305_SHA256";
const DEFAULT_CIPHERS = tls.DEFAULT_CIPHERS;
/** The handshake tests expect Node's own list; under an operator's --tls-cipher-list they do not apply. */
const nodeDefaultList = DEFAULT_CIPHERS.split(":").slice(0, 3).join(":") === `${AES256}:${CHACHA}:${AES128}`;

describe("the cipher list", () => {
  it.skipIf(!nodeDefaultList)("puts AES-128-GCM first among the TLS 1.3 suites and leaves the TLS 1.2 list as Node has it", () => {
    const list = preferredCiphers().split(":");
    expect(list.slice(0, 3)).toEqual([AES128, AES256, CHACHA]);
    expect(list.slice(3)).toEqual(DEFAULT_CIPHERS.split(":").filter((entry) => !entry.startsWith("TLS_")));
  });

  it("follows tls.DEFAULT_CIPHERS as it is when called, as Node's own contexts do", () => {
    const narrowed = `${CHACHA}:ECDHE-ECDSA-CHACHA20-POLY1305`;
    tls.DEFAULT_CIPHERS = narrowed;
    try {
      expect(preferredCiphers()).toBe(narrowed);
    } finally {
      tls.DEFAULT_CIPHERS = DEFAULT_CIPHERS;
    }
    expect(preferredCiphers()).toBe(preferredCiphers(DEFAULT_CIPHERS));
  });

  it("only reorders: an operator's list (--tls-cipher-list) keeps its suites, none added", () => {
    expect(preferredCiphers(`${CHACHA}:${AES256}:ECDHE-ECDSA-AES256-GCM-SHA384`)).toBe(`${AES256}:${CHACHA}:ECDHE-ECDSA-AES256-GCM-SHA384`);
    expect(preferredCiphers(`TLS_AES_128_CCM_SHA256:${CHACHA}:${AES128}:HIGH`)).toBe(`${AES128}:${CHACHA}:TLS_AES_128_CCM_SHA256:HIGH`);
  });
});

describe.skipIf(!nodeDefaultList)("the suite a client gets from portcullis", () => {
  const handshake = async (options: { ciphers?: string; maxVersion?: "TLSv1.2" } = {}) => {
    const tls = await openTlsTunnel(proxy.port, `localhost:${upstream.port}`, { servername: "localhost", ca: proxy.caPem, ...options });
    const cipher = tls.getCipher();
    tls.destroy();
    return cipher;
  };

  it("is AES-128-GCM for a client that lists AES-256 first (Node's and OpenSSL's default order)", async () => {
    expect((await handshake()).name).toBe(AES128);
  });

  it("is ChaCha20 for a client that lists it first (no AES hardware)", async () => {
    expect((await handshake({ ciphers: `${CHACHA}:${AES256}:${AES128}` })).name).toBe(CHACHA);
  });

  it("is the client's only suite when it offers one, and TLS 1.2 still works", async () => {
    expect((await handshake({ ciphers: AES256 })).name).toBe(AES256);
    const tls12 = await handshake({ maxVersion: "TLSv1.2" });
    expect(tls12.version).toBe("TLSv1.2");
    expect(tls12.name).toBe("ECDHE-ECDSA-AES128-GCM-SHA256");
  });
});

describe.skipIf(!nodeDefaultList)("the suite portcullis offers an upstream", () => {
  it("comes in its own order, so a server that takes the client's picks AES-128-GCM", async () => {
    const before = upstreamCiphers.length;
    const res = await request(`https://127.0.0.1:${(byClientOrder.address() as AddressInfo).port}/`, { dispatcher: proxy.dispatcher });
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe("ok");
    expect(upstreamCiphers.slice(before)).toEqual([AES128]);
  });
});
