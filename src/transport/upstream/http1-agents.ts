import http from "node:http";
import https from "node:https";
import type { Duplex } from "node:stream";
import type { SecureContext, TLSSocket } from "node:tls";
import type { LookupFunction } from "./lookup.js";

/**
 * HTTP/1.1 keep-alive connection pools shared by every tunnel: one per scheme, keyed by Node
 * per host:port. Free sockets close after IDLE_MS.
 */
const ADOPTED = Symbol("portcullis.adopted");

/** A socket handed to the pool already connected (its TLS handshake is done and was timed). */
export function isAdopted(socket: Duplex): boolean {
  return (socket as Duplex & { [ADOPTED]?: boolean })[ADOPTED] === true;
}

/**
 * An https.Agent that can take a connection made elsewhere: the one dialled to learn an
 * upstream's protocol (ALPN), when it chose HTTP/1.1, becomes the pool's first socket for
 * that host instead of a wasted handshake.
 */
class AdoptingAgent extends https.Agent {
  private readonly spare = new Map<string, TLSSocket[]>();

  adopt(host: string, port: number, socket: TLSSocket): void {
    const key = `${host}:${port}`;
    (socket as TLSSocket & { [ADOPTED]?: boolean })[ADOPTED] = true;
    const list = this.spare.get(key) ?? [];
    list.push(socket);
    this.spare.set(key, list);
    const forget = () => {
      const remaining = (this.spare.get(key) ?? []).filter((candidate) => candidate !== socket);
      if (remaining.length) this.spare.set(key, remaining);
      else this.spare.delete(key);
    };
    socket.once("close", forget);
    // Unclaimed (the request that wanted it went elsewhere): not kept open for ever.
    setTimeout(() => {
      if ((this.spare.get(key) ?? []).includes(socket)) socket.destroy();
    }, Http1Agents.IDLE_MS).unref();
  }

  override createConnection(options: http.ClientRequestArgs, callback?: (error: Error | null, socket: Duplex) => void): Duplex {
    const key = `${options.host}:${options.port}`;
    const list = this.spare.get(key);
    const socket = list?.shift();
    if (list && list.length === 0) this.spare.delete(key);
    if (socket && !socket.destroyed) return socket;
    return (https.Agent.prototype as unknown as { createConnection: AdoptingAgent["createConnection"] }).createConnection.call(this, options, callback);
  }

  override destroy(): void {
    for (const list of this.spare.values()) for (const socket of list) socket.destroy();
    this.spare.clear();
    super.destroy();
  }
}

export class Http1Agents {
  static readonly IDLE_MS = 30_000;
  readonly http: http.Agent;
  readonly https: AdoptingAgent;

  constructor(lookup: LookupFunction, trust: SecureContext) {
    const common = {
      keepAlive: true,
      maxSockets: 256,
      // At least as many as an h2 client may have streams open (max_concurrent_streams): freed sockets past
      // this are closed, and every one re-dialled costs a TLS handshake.
      maxFreeSockets: 256,
      timeout: Http1Agents.IDLE_MS,
      scheduling: "lifo" as const,
      lookup,
      noDelay: true,
    };
    this.http = new http.Agent(common);
    this.https = new AdoptingAgent({ ...common, secureContext: trust, minVersion: "TLSv1.2", ALPNProtocols: ["http/1.1"] });
  }

  agentFor(scheme: "http" | "https"): http.Agent {
    return scheme === "https" ? this.https : this.http;
  }

  destroy(): void {
    this.http.destroy();
    this.https.destroy();
  }
}
