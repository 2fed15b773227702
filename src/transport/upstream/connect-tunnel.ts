import http from "node:http";
import type { Socket } from "node:net";
import { ProxyError } from "../../core/errors.js";
import type { ParentProxy } from "./parent-proxy.js";

/**
 * Asks the parent proxy for a tunnel (`CONNECT authority`, RFC 9110 9.3.6) and resolves with
 * the socket once it answered 2xx; every other answer, and a parent that cannot be reached,
 * is a 502 upstream_unreachable naming the parent and what it said. The parent is dialled by
 * the system resolver, not the destination guard: it may be on loopback or a private network.
 * The caller times it (the
 * connect timeout covers the parent hop and the destination's handshake together) and
 * destroys the request it is handed on a timeout.
 */
export function openConnectTunnel(parent: ParentProxy, authority: string, authorization: string | undefined, onRequest: (request: http.ClientRequest) => void): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { Host: authority };
    if (authorization) headers["Proxy-Authorization"] = authorization;
    const request = http.request({ host: parent.host, port: parent.port, method: "CONNECT", path: authority, headers, agent: false, setHost: false });
    onRequest(request);
    request.once("connect", (response: http.IncomingMessage, socket: Socket, head: Buffer) => {
      const status = response.statusCode ?? 0;
      if (status < 200 || status > 299) {
        socket.destroy();
        const reason = response.statusMessage ? ` ${response.statusMessage}` : "";
        reject(new ProxyError("upstream_unreachable", `the ${parent.name} refused CONNECT ${authority}: ${status}${reason}`));
        return;
      }
      // Bytes the parent sent after its 2xx belong to the destination.
      if (head.length) socket.unshift(head);
      socket.setNoDelay(true);
      resolve(socket);
    });
    request.once("error", (error: NodeJS.ErrnoException) => {
      if (error instanceof ProxyError) return reject(error);
      const code = error.code ?? "";
      if (code === "ECONNRESET" || error.message === "socket hang up") {
        return reject(new ProxyError("upstream_unreachable", `the ${parent.name} closed the connection before answering CONNECT ${authority}`));
      }
      reject(new ProxyError("upstream_unreachable", `cannot connect to the ${parent.name} (for ${authority}): ${code || error.message}`));
    });
    request.end();
  });
}
