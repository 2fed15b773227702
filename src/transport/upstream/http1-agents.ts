import http from "node:http";
import https from "node:https";
import type { Duplex } from "node:stream";
import type { SecureContext, TLSSocket } from "node:tls";
import type { UpstreamConnector } from "./connector.js";
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

function markAdopted<T extends Duplex>(socket: T): T {
  (socket as Duplex & { [ADOPTED]?: boolean })[ADOPTED] = true;
  return socket;
}

type CreateCallback = (error: Error | null, socket: Duplex) => void;

/**
 * The key of a pool within one agent: host, port and TLS name are all that differ between its
 * connections (every other TLS option is the agent's own, the same for each). Node's getName
 * builds the key from two dozen options on every request and every release; this is that key
 * for what can vary here.
 */
function poolKey(options: http.ClientRequestArgs & { servername?: string }): string {
  return `${options.host ?? "localhost"}:${options.port ?? ""}:${options.servername ?? ""}`;
}

/**
 * A destination the parent proxy carries: the connection is the connector's (a CONNECT tunnel,
 * the handshake over it, guarded and timed there), handed to Node once it is up.
 */
function connectThroughParent(connector: UpstreamConnector | undefined, options: http.ClientRequestArgs, tls: boolean, callback: CreateCallback | undefined): boolean {
  const host = options.host ?? "";
  if (!connector?.parentFor(host) || !callback) return false;
  const destination = { host, port: Number(options.port) };
  const opening = tls ? connector.tls(destination, ["http/1.1"]) : connector.tcp(destination);
  opening.then((socket) => callback(null, markAdopted(socket)), (error: Error) => callback(error, undefined as unknown as Duplex));
  return true;
}

/** Plain HTTP that must reach the destination itself (upgrades): through a CONNECT tunnel when the parent carries it. */
class RoutingHttpAgent extends http.Agent {
  constructor(
    options: http.AgentOptions,
    private readonly connector: UpstreamConnector | undefined,
  ) {
    super(options);
  }

  override getName(options: http.ClientRequestArgs = {}): string {
    return poolKey(options);
  }

  override createConnection(options: http.ClientRequestArgs, callback?: CreateCallback): Duplex | undefined {
    if (connectThroughParent(this.connector, options, false, callback)) return undefined;
    return (http.Agent.prototype as unknown as { createConnection: RoutingHttpAgent["createConnection"] }).createConnection.call(this, options, callback);
  }
}

/**
 * An https.Agent that can take a connection made elsewhere: the one dialled to learn an
 * upstream's protocol (ALPN), when it chose HTTP/1.1, becomes the pool's first socket for
 * that host instead of a wasted handshake.
 */
class AdoptingAgent extends https.Agent {
  private readonly spare = new Map<string, TLSSocket[]>();

  constructor(
    options: https.AgentOptions,
    private readonly connector: UpstreamConnector | undefined,
  ) {
    super(options);
  }

  override getName(options: https.RequestOptions = {}): string {
    return poolKey(options);
  }

  adopt(host: string, port: number, socket: TLSSocket): void {
    const key = `${host}:${port}`;
    markAdopted(socket);
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

  override createConnection(options: http.ClientRequestArgs, callback?: CreateCallback): Duplex | undefined {
    const key = `${options.host}:${options.port}`;
    const list = this.spare.get(key);
    const socket = list?.shift();
    if (list && list.length === 0) this.spare.delete(key);
    if (socket && !socket.destroyed) return socket;
    if (connectThroughParent(this.connector, options, true, callback)) return undefined;
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
  /** Plain-HTTP requests in absolute form to the parent proxy: one keep-alive pool of connections to it, whatever the destination. */
  readonly toParent: http.Agent | undefined;

  constructor(lookup: LookupFunction, trust: SecureContext, connector?: UpstreamConnector) {
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
    this.http = new RoutingHttpAgent(common, connector);
    this.https = new AdoptingAgent({ ...common, secureContext: trust, minVersion: "TLSv1.2", ALPNProtocols: ["http/1.1"] }, connector);
    // The parent is found by the system resolver: the guard judges destinations, not the parent.
    const { lookup: _guarded, ...toParent } = common;
    this.toParent = connector?.parent ? new http.Agent(toParent) : undefined;
  }

  agentFor(scheme: "http" | "https"): http.Agent {
    return scheme === "https" ? this.https : this.http;
  }

  destroy(): void {
    this.http.destroy();
    this.https.destroy();
    this.toParent?.destroy();
  }
}
