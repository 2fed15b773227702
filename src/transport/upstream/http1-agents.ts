import http from "node:http";
import https from "node:https";
import type { SecureContext } from "node:tls";
import type { LookupFunction } from "./lookup.js";

/**
 * HTTP/1.1 keep-alive connection pools shared by every tunnel: one per scheme, keyed by Node
 * per host:port. Free sockets close after IDLE_MS.
 */
export class Http1Agents {
  static readonly IDLE_MS = 30_000;
  readonly http: http.Agent;
  readonly https: https.Agent;

  constructor(lookup: LookupFunction, trust: SecureContext) {
    const common = {
      keepAlive: true,
      maxSockets: 256,
      maxFreeSockets: 64,
      timeout: Http1Agents.IDLE_MS,
      scheduling: "lifo" as const,
      lookup,
      noDelay: true,
    };
    this.http = new http.Agent(common);
    this.https = new https.Agent({ ...common, secureContext: trust, minVersion: "TLSv1.2", ALPNProtocols: ["http/1.1"] });
  }

  agentFor(scheme: "http" | "https"): http.Agent {
    return scheme === "https" ? this.https : this.http;
  }

  destroy(): void {
    this.http.destroy();
    this.https.destroy();
  }
}
