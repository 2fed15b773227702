import type { Server } from "node:http";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { TLSSocket, type TLSSocketOptions } from "node:tls";
import { destroyOnError } from "../core/destroy-on-error.js";
import type { TunnelContext } from "../core/exchange.js";
import type { Http2Inner } from "./http2/server.js";
import { tunnelRecord } from "./audit.js";
import type { TransportRuntime } from "./runtime.js";
import { labelTunnel } from "./tunnel-context.js";

/** The servers intercepted connections are handed to (never listening themselves). */
export interface InnerServers {
  http1: Server;
  /** Absent when proxy.http2 is false. */
  http2: Http2Inner | undefined;
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Whether a plain-text tunnel starts with the h2 prior-knowledge preface (as far as it has arrived). */
function startsWithH2Preface(chunk: Buffer): boolean {
  const length = Math.min(chunk.length, H2_PREFACE.length);
  return length >= 4 && chunk.subarray(0, length).equals(H2_PREFACE.subarray(0, length));
}

const TLS_HANDSHAKE_RECORD = 0x16;

/** Waits for the first bytes after "200 Connection Established"; null if the client leaves or stalls. */
function firstChunk(socket: Socket, head: Buffer, timeoutMs: number): Promise<Buffer | null> {
  if (head.length) return Promise.resolve(head);
  return new Promise((resolve) => {
    const settle = (chunk: Buffer | null) => {
      clearTimeout(timer);
      socket.off("readable", onReadable).off("end", onGone).off("close", onGone).off("error", onGone);
      resolve(chunk);
    };
    const onReadable = () => {
      const chunk = socket.read() as Buffer | null;
      if (chunk) settle(chunk);
    };
    const onGone = () => settle(null);
    const timer = setTimeout(onGone, timeoutMs);
    socket.on("readable", onReadable).once("end", onGone).once("close", onGone).once("error", onGone);
  });
}

/**
 * Inside an intercepted tunnel: TLS (first byte 0x16) is terminated with a certificate forged
 * for the host, anything else is taken as plain HTTP. Either way the connection joins the one
 * inner http.Server, labelled with the CONNECT that opened it.
 */
export async function interceptTunnel(runtime: TransportRuntime, inner: InnerServers, tunnel: TunnelContext, socket: Socket, head: Buffer): Promise<void> {
  // The certificate is the CONNECT host's whatever the client's hello says (below), so a host's
  // first forgery runs while the 200 goes out and the ClientHello comes back. Its failure is
  // handled where it is awaited; a tunnel that turns out plain, or goes away, never awaits it.
  const forging = runtime.contexts.get(tunnel.host);
  forging.catch(() => undefined);
  socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
  const chunk = await firstChunk(socket, head, runtime.timeouts.headersMs);
  if (!chunk) {
    socket.destroy();
    return;
  }
  socket.unshift(chunk);
  if (chunk[0] !== TLS_HANDSHAKE_RECORD) {
    labelTunnel(socket, tunnel);
    if (inner.http2 && startsWithH2Preface(chunk)) inner.http2.server.emit("connection", socket);
    else inner.http1.emit("connection", socket);
    return;
  }
  const startedAt = performance.now();
  const logFailure = (type: string, message: string) =>
    runtime.audit.write(tunnelRecord(tunnel, startedAt, { error: { type, message }, reason: "TLS handshake with the client failed" }));
  let context;
  try {
    context = await forging;
  } catch (error) {
    runtime.diagnostics.error({ err: error, host: tunnel.host }, "could not forge a certificate");
    logFailure("certificate_error", `could not forge a certificate for ${tunnel.host}`);
    socket.destroy();
    return;
  }
  const options: TLSSocketOptions & { highWaterMark: number } = {
    isServer: true,
    // One certificate, the CONNECT host's, whatever SNI the client sends (or none, as for IP
    // literals): a client cannot make portcullis forge and store names at will, and a name other
    // than the tunnel's fails the client's own check.
    secureContext: context,
    // h2 preferred; the client's choice decides which inner server gets the connection.
    ALPNProtocols: inner.http2 ? ["h2", "http/1.1"] : ["http/1.1"],
    // Larger than the 16 KiB default: fewer pause/resume rounds per MiB on big downloads
    // (measured: about -20% proxy CPU per MiB), at up to this much buffered per slow client.
    highWaterMark: 256 * 1024,
  };
  // highWaterMark reaches the underlying stream at runtime; Node's typings leave it out.
  const tls = new TLSSocket(socket, options);
  const handshakeTimer = setTimeout(() => tls.destroy(new Error("TLS handshake timed out")), runtime.timeouts.headersMs);
  const onHandshakeError = (error: NodeJS.ErrnoException) => {
    clearTimeout(handshakeTimer);
    logFailure("client_tls_error", `${error.code ?? "TLS"}: ${error.message}`);
    tls.destroy();
    socket.destroy();
  };
  const onCloseInHandshake = () => clearTimeout(handshakeTimer);
  tls.once("error", onHandshakeError);
  tls.once("close", onCloseInHandshake);
  tls.once("secure", () => {
    clearTimeout(handshakeTimer);
    // Every handshake listener goes: one left behind would keep this scope (the timer, the
    // tunnel, the failure logger) alive for as long as the connection stays open.
    tls.off("error", onHandshakeError).off("close", onCloseInHandshake);
    // The http server's own handler takes over errors from here; this one only keeps a late one from being fatal.
    tls.on("error", destroyOnError);
    labelTunnel(tls, tunnel);
    // Node clears this only for sockets a tls.Server accepted; the h2 session would otherwise wait for a second handshake.
    (tls as TLSSocket & { secureConnecting: boolean }).secureConnecting = false;
    if (inner.http2 && tls.alpnProtocol === "h2") inner.http2.server.emit("connection", tls);
    else inner.http1.emit("connection", tls);
  });
}
