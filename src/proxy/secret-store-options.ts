import type { SecureContext } from "node:tls";
import type { Logger } from "pino";
import type { SecretStoreOptions } from "../credentials/secrets.js";
import { TokenFetch } from "../credentials/token-fetch.js";
import type { Policy } from "../policy/schema.js";
import type { UpstreamConnector } from "../transport/upstream/connector.js";
import type { LookupFunction } from "../transport/upstream/lookup.js";

/** A token endpoint is not an LLM: it answers in seconds or is broken, whatever upstream.response_timeout allows. */
const TOKEN_RESPONSE_MS = 30_000;

/**
 * Secret stores reach token endpoints (GitHub, OAuth 2.0, Vault) exactly as upstreams are
 * reached: the same trust, name overrides, destination guard and timeouts. A parent proxy
 * (upstream.proxy) is used through the upstream connector.
 */
export function secretStoreOptions(policy: Policy, trust: SecureContext, lookup: LookupFunction, diagnostics: Logger, connector?: UpstreamConnector): SecretStoreOptions {
  // With a parent proxy, token endpoints go through it like upstreams: the connector's TLS path.
  const connect = policy.upstream.proxy && connector ? (host: string, port: number) => connector.tls({ host, port }) : undefined;
  return {
    fetcher: new TokenFetch({ trust, lookup, connectMs: policy.upstream.connect_timeout, responseMs: Math.min(policy.upstream.response_timeout, TOKEN_RESPONSE_MS), connect }),
    warn: (secret, message) => diagnostics.warn({ secret }, message),
  };
}
