import type { Exchange } from "../core/exchange.js";
import { getHeader, headerPairs, removeHeaders, setHeader, type RawHeaders } from "../core/headers.js";

/** Headers as a hook sees them: names keep their case; get and remove ignore it. */
export interface HeaderMap {
  get(name: string): string | undefined;
  set(name: string, value: string): void;
  remove(name: string): void;
  entries(): [string, string][];
}

export interface RequestInfo {
  readonly requestId: string;
  readonly client: string | null;
  readonly method: string;
  readonly scheme: "http" | "https";
  readonly host: string;
  readonly port: number;
}

/**
 * onRequest / onWebSocket: after the policy allowed the request, before secrets are put on it.
 * Hooks are trusted operator code: a path or header they change is not judged again.
 */
export interface RequestContext extends RequestInfo {
  /** Path and query to send upstream; a hook may change it. */
  path: string;
  readonly headers: HeaderMap;
  readonly webSocket: boolean;
  /** Refuse the request: 403 policy_denied with this reason, and a `denied` audit line. */
  deny(reason: string): void;
}

/** onResponse: the upstream's answer before it is sent to the client. Bodies stream on; only status and headers are here. */
export interface ResponseContext {
  readonly request: RequestInfo & { readonly path: string };
  status: number;
  readonly headers: HeaderMap;
}

export type Hook<C> = (ctx: C) => void | Promise<void>;

export interface Hooks {
  onRequest?: Hook<RequestContext>;
  onResponse?: Hook<ResponseContext>;
  onWebSocket?: Hook<RequestContext>;
}

export function headerMap(read: () => RawHeaders, write: (headers: RawHeaders) => void): HeaderMap {
  return {
    get: (name) => getHeader(read(), name),
    set: (name, value) => write(setHeader(read(), name, value)),
    remove: (name) => write(removeHeaders(read(), new Set([name.toLowerCase()]))),
    entries: () => headerPairs(read()),
  };
}

export function requestInfo(exchange: Exchange): RequestInfo {
  return {
    requestId: exchange.requestId,
    client: exchange.tunnel.client,
    method: exchange.method,
    scheme: exchange.target.scheme,
    host: exchange.target.host,
    port: exchange.target.port,
  };
}

/** Runs hooks in the order they were added; the first to deny wins. */
export async function runHooks<C>(hooks: readonly Hooks[], pick: (hooks: Hooks) => Hook<C> | undefined, ctx: C): Promise<void> {
  for (const set of hooks) {
    const hook = pick(set);
    if (hook) await hook(ctx);
  }
}
