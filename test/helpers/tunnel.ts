import { connect, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";

/** Opens CONNECT host:port on the proxy and resolves with the raw socket once "200" came back. */
export function openConnect(proxyPort: number, authority: string, extraHeaders = ""): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(proxyPort, "127.0.0.1");
    socket.once("error", reject);
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${extraHeaders}\r\n`);
    let head = "";
    const onData = (chunk: Buffer) => {
      head += chunk.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end === -1) return;
      socket.off("data", onData);
      socket.off("error", reject);
      if (!head.startsWith("HTTP/1.1 200")) {
        socket.destroy();
        reject(Object.assign(new Error(`CONNECT refused: ${head.split("\r\n")[0]}`), { response: head }));
        return;
      }
      resolve(socket);
    };
    socket.on("data", onData);
  });
}

/** CONNECT then a TLS handshake over the tunnel. */
export async function openTlsTunnel(proxyPort: number, authority: string, options: ConnectionOptions): Promise<TLSSocket> {
  const socket = await openConnect(proxyPort, authority);
  return new Promise((resolve, reject) => {
    const tls = tlsConnect({ socket, ...options });
    tls.once("secureConnect", () => resolve(tls));
    tls.once("error", (error) => {
      socket.destroy();
      reject(error);
    });
  });
}

/** Reads from a socket until it ends; resolves with everything it sent. */
export function readAll(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    socket.on("data", (chunk: Buffer) => (data += chunk.toString()));
    socket.once("close", () => resolve(data));
  });
}

/** Sends raw bytes inside a TLS tunnel to host:port (SNI host) and resolves with everything that comes back. */
export async function rawExchange(proxyPort: number, host: string, port: number, ca: string, bytes: string): Promise<string> {
  const tls = await openTlsTunnel(proxyPort, `${host}:${port}`, { servername: host, ca });
  const reply = readAll(tls as unknown as Socket);
  tls.write(bytes);
  return reply;
}
