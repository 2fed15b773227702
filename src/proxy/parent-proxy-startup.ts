import type { Logger } from "pino";
import type { PolicyState } from "../pipeline/context.js";
import { UpstreamPool } from "../transport/upstream/pool.js";

/**
 * Says, at start and on every reload, that upstream connections go through a parent proxy
 * (named by HOST:PORT, never its password) and which hosts bypass it; a password kept in a
 * secret source that cannot be read is a warning, as any secret's.
 */
export async function warmUpParentProxy(state: PolicyState, diagnostics: Logger): Promise<void> {
  const parent = state.upstream instanceof UpstreamPool ? state.upstream.connector.parent : undefined;
  if (!parent) return;
  diagnostics.info({ parent_proxy: parent.authority, no_proxy: state.policy.upstream.no_proxy }, `upstream connections go through the ${parent.name}`);
  for (const failure of await parent.warmUp()) {
    diagnostics.warn({ secret: failure.secret }, `${failure.message}; requests through the ${parent.name} will get 502 upstream_unreachable`);
  }
}
