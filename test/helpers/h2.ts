import http2, { type ClientHttp2Session, type Http2SecureServer, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import type { ServerPki } from "./pki.js";
import { openConnect } from "./tunnel.js";

/** An h2 client session to host:port through a CONNECT tunnel on the proxy (TLS with ALPN h2, trusting `ca`). */
export async function h2ThroughProxy(proxyPort: number, host: string, port: number, ca: string, alpn = ["h2"]): Promise<{ session: ClientHttp2Session; tls: TLSSocket }> {
  const socket = await openConnect(proxyPort, `${host}:${port}`);
  const tls = await new Promise<TLSSocket>((resolve, reject) => {
    const secure = tlsConnect({ socket, servername: host, ca, ALPNProtocols: alpn });
    secure.once("secureConnect", () => resolve(secure)).once("error", reject);
  });
  const session = http2.connect(`https://${host}:${port}`, { createConnection: () => tls });
  session.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => session.once("connect", () => resolve()).once("error", reject));
  return { session, tls };
}

/** h2 with prior knowledge over a plain-text CONNECT tunnel (the h2c preface, no TLS). */
export async function h2cThroughProxy(proxyPort: number, host: string, port: number): Promise<ClientHttp2Session> {
  const socket = await openConnect(proxyPort, `${host}:${port}`);
  const session = http2.connect(`http://${host}:${port}`, { createConnection: () => socket });
  session.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => session.once("connect", () => resolve()).once("error", reject));
  return session;
}

export interface H2Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  trailers: IncomingHttpHeaders;
}

/** One request on a session; resolves with the whole answer, rejects if the stream is reset. */
export function h2Request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: Buffer | string, trailers?: OutgoingHttpHeaders): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": body === undefined ? "GET" : "POST", ...headers }, trailers ? { waitForTrailers: true } : { endStream: body === undefined });
    if (trailers) stream.once("wantTrailers", () => stream.sendTrailers(trailers));
    let status = 0;
    let responseHeaders: IncomingHttpHeaders = {};
    let responseTrailers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.once("response", (h) => {
      status = Number(h[":status"]);
      responseHeaders = h;
    });
    stream.once("trailers", (t) => (responseTrailers = t));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.once("error", reject);
    stream.once("close", () => {
      if (stream.rstCode && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) reject(new Error(`stream reset with code ${stream.rstCode}`));
      else resolve({ status, headers: responseHeaders, body: Buffer.concat(chunks), trailers: responseTrailers });
    });
    if (body !== undefined) stream.end(body);
    else if (trailers) stream.end();
  });
}

export interface H2Upstream {
  server: Http2SecureServer;
  port: number;
  sessions: Set<ServerHttp2Session>;
  /** Every session the upstream ever accepted (connections opened to it). */
  sessionCount: () => number;
  close(): Promise<void>;
}

/** An h2 TLS server on 127.0.0.1:0 (h2 only unless allowHTTP1), with the upstream test PKI. */
export async function startH2Upstream(pki: ServerPki, onStream: (stream: http2.ServerHttp2Stream, headers: IncomingHttpHeaders, session: ServerHttp2Session) => void, allowHTTP1 = false): Promise<H2Upstream> {
  const server = http2.createSecureServer({ key: pki.key, cert: pki.ipCert, SNICallback: pki.sniCallback, allowHTTP1, settings: { enableConnectProtocol: false } });
  const sessions = new Set<ServerHttp2Session>();
  let count = 0;
  server.on("session", (session: ServerHttp2Session) => {
    count++;
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => undefined);
    onStream(stream, headers, stream.session as ServerHttp2Session);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    sessions,
    sessionCount: () => count,
    close: () =>
      new Promise((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Reads a request stream's body. */
export function readStream(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.once("end", () => resolve(Buffer.concat(chunks)));
    stream.once("error", reject);
  });
}
