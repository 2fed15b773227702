import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { request } from "undici";
import { openConnect } from "./tunnel.js";

export interface ApiAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/** One call to the /v1/clients API on an admin listener. */
export async function callApi(admin: string, method: string, path: string, options: { token?: string | null; body?: unknown; raw?: string } = {}): Promise<ApiAnswer> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  const res = await request(`${admin}${path}`, {
    method: method as "GET",
    headers,
    body: options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body)),
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

export const bearer = (token: string) => `Proxy-Authorization: Bearer ${token}\r\n`;
export const basic = (name: string, token: string) => `Proxy-Authorization: Basic ${Buffer.from(`${name}:${token}`).toString("base64")}\r\n`;

/** The status line a CONNECT gets (200 when the tunnel opened; the socket is closed either way). */
export async function connectStatus(proxyPort: number, authority: string, auth: string): Promise<string> {
  try {
    const socket = await openConnect(proxyPort, authority, auth);
    socket.destroy();
    return "HTTP/1.1 200";
  } catch (error) {
    return String((error as { response?: string }).response ?? (error as Error).message).split("\r\n")[0]!;
  }
}

/** A TLS session inside a CONNECT tunnel, kept open. */
export async function openTunnel(proxyPort: number, host: string, port: number, auth: string, ca: string): Promise<TLSSocket> {
  const socket = await openConnect(proxyPort, `${host}:${port}`, auth);
  return new Promise((resolve, reject) => {
    const tls = tlsConnect({ socket, servername: host, ca });
    tls.once("secureConnect", () => resolve(tls));
    tls.once("error", reject);
  });
}

/** Sends one keep-alive GET on a tunnel and resolves with the answer's head and body. */
export function getOnTunnel(tls: TLSSocket, host: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = "";
    const onData = (chunk: Buffer) => {
      data += chunk.toString();
      const end = data.indexOf("\r\n\r\n");
      if (end < 0) return;
      const length = Number(/content-length: (\d+)/i.exec(data.slice(0, end))?.[1] ?? 0);
      if (Buffer.byteLength(data) - end - 4 < length) return;
      tls.off("data", onData);
      resolve(data);
    };
    tls.on("data", onData);
    tls.once("error", reject);
    tls.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  });
}

export function closed(socket: { once(event: "close", listener: () => void): unknown }): Promise<void> {
  return new Promise((resolve) => socket.once("close", () => resolve()));
}
