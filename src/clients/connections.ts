import type { Duplex } from "node:stream";

/**
 * The open client connections of each registered client (CONNECT tunnels, and through them
 * every TLS session, h2 stream and WebSocket inside), so that revoking a client or its
 * expiry can close them.
 */
export class ClientConnections {
  private readonly open = new Map<string, Set<Duplex>>();

  track(client: string, socket: Duplex): void {
    let sockets = this.open.get(client);
    if (!sockets) this.open.set(client, (sockets = new Set()));
    sockets.add(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      if (sockets.size === 0 && this.open.get(client) === sockets) this.open.delete(client);
    });
  }

  count(client: string): number {
    return this.open.get(client)?.size ?? 0;
  }

  /** Destroys every connection of the client; returns how many there were. */
  closeAll(client: string): number {
    const sockets = this.open.get(client);
    if (!sockets) return 0;
    this.open.delete(client);
    for (const socket of sockets) socket.destroy();
    return sockets.size;
  }
}
