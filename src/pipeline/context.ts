import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { ProxyMetrics } from "../admin/metrics.js";
import type { SecureContextStore } from "../ca/secure-contexts.js";
import type { AuditLog } from "../log/loggers.js";
import type { Scrubber } from "../log/scrub.js";
import type { SecretStore } from "../credentials/secrets.js";
import type { DestinationGuard } from "../policy/destinations.js";
import type { Identities } from "../policy/identity.js";
import type { Policy } from "../policy/schema.js";
import type { TunnelContext } from "./exchange.js";
import type { Hooks } from "./hooks.js";
import type { UpstreamPool } from "./upstream-pool.js";

/** Everything that changes together when the policy is reloaded. */
export interface PolicyState {
  readonly policy: Policy;
  readonly upstream: UpstreamPool;
  /** Host patterns tunnelled without interception. */
  readonly passthrough: readonly string[];
  readonly secrets: SecretStore;
  readonly identities: Identities;
  readonly guard: DestinationGuard;
}

/** Client-side timeouts of the listener and the tunnels. */
export interface ClientTimeouts {
  /** Time to receive a request's headers (slowloris) and, after CONNECT, the first byte. */
  headersMs: number;
  /** Time an idle keep-alive connection is kept open between requests. */
  keepAliveMs: number;
}

/** What every stage of the pipeline shares: the current policy state and the process-wide services. */
export interface Runtime {
  state: PolicyState;
  readonly contexts: SecureContextStore;
  readonly audit: AuditLog;
  readonly diagnostics: Logger;
  readonly scrubber: Scrubber;
  readonly timeouts: ClientTimeouts;
  /** The CONNECT that opened each tunnel socket, looked up by every request on it. */
  readonly tunnels: WeakMap<Socket, TunnelContext>;
  readonly metrics: ProxyMetrics;
  /** Programmatic hooks (createProxy's onRequest/onResponse/onWebSocket), run in order. */
  readonly hooks: Hooks[];
}
