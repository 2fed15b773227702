import type { Duplex } from "node:stream";
import type { TunnelContext } from "../core/exchange.js";

const TUNNEL = Symbol("portcullis.tunnel");

/** A connection that came out of a CONNECT: it carries the tunnel's context with it. */
type Labelled = Duplex & { [TUNNEL]?: TunnelContext };

export function labelTunnel(socket: Duplex, tunnel: TunnelContext): void {
  (socket as Labelled)[TUNNEL] = tunnel;
}

/** The CONNECT that opened this connection; undefined on the listener itself. */
export function tunnelOf(socket: Duplex | null | undefined): TunnelContext | undefined {
  return socket ? (socket as Labelled)[TUNNEL] : undefined;
}

export function clientAddress(socket: Duplex | null | undefined): string {
  const raw = socket as { remoteAddress?: string; remotePort?: number } | null | undefined;
  return raw?.remoteAddress ? `${raw.remoteAddress}:${raw.remotePort}` : "unknown";
}
