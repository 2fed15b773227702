import type { SecureContextStore } from "../ca/secure-contexts.js";
import type { Duplex } from "node:stream";
import type { PipelineRuntime } from "../pipeline/context.js";

/** Client-side timeouts of the listener and the tunnels. */
export interface ClientTimeouts {
  /** Time to receive a request's headers (slowloris) and, after CONNECT, the first byte. */
  headersMs: number;
  /** Time an idle keep-alive connection is kept open between requests. */
  keepAliveMs: number;
}

/** What the transports need besides the pipeline's runtime: forged certificates and client timeouts. */
export interface TransportRuntime extends PipelineRuntime {
  readonly contexts: SecureContextStore;
  readonly timeouts: ClientTimeouts;
  /** Registered clients' tunnels, closed when the client is revoked or expires. */
  readonly clientConnections?: { track(client: string, socket: Duplex): void };
}
