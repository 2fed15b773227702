import { ProxyError } from "../../core/errors.js";
import type { OutgoingRequest } from "../../core/messages.js";
import { headerMap, requestInfo, runHooks, type HeaderMap, type RequestContext, type RequestInfo, type ResponseContext } from "../hooks.js";
import type { Answer, Flow, Stage } from "../stage.js";

/**
 * The programmatic hooks (createProxy's onRequest / onWebSocket / onResponse). Requests: after
 * the policy allowed them, before any secret is on them; a hook may change path and headers,
 * or deny. Responses: the status and headers last, just before they are sent.
 */
export const userHooks: Stage = {
  name: "hooks",
  // Always runs (no `active`): hooks may be added at any time (proxy.onRequest), and without any its phases ask one array.
  // Not async: without hooks nothing is awaited, and the request goes on in the same turn.
  request: (flow: Flow) => (flow.hooks.some((set) => (flow.upgrade ? set.onWebSocket : set.onRequest)) ? runRequestHooks(flow) : undefined),
  response: (flow: Flow, answer: Answer) => (flow.hooks.some((set) => set.onResponse) ? runResponseHooks(flow, answer) : undefined),
};

/**
 * A class rather than an object literal with a path accessor: V8 gives each such literal a
 * hidden class of its own that keeps the exchange alive until a full collection (see
 * Http1UpstreamResponse in transport/upstream/http1.ts).
 */
class HookRequestContext implements RequestContext {
  readonly requestId: string;
  readonly client: string | null;
  readonly method: string;
  readonly scheme: "http" | "https";
  readonly host: string;
  readonly port: number;
  readonly headers: HeaderMap;

  /** Private for real (#): a hook that spreads or prints its context sees only the fields above. */
  readonly #outgoing: OutgoingRequest;

  constructor(
    info: RequestInfo,
    outgoing: OutgoingRequest,
    readonly webSocket: boolean,
    readonly deny: (reason: string) => void,
  ) {
    this.#outgoing = outgoing;
    this.requestId = info.requestId;
    this.client = info.client;
    this.method = info.method;
    this.scheme = info.scheme;
    this.host = info.host;
    this.port = info.port;
    this.headers = headerMap(
      () => outgoing.headers,
      (headers) => (outgoing.headers = headers),
    );
  }

  get path(): string {
    return this.#outgoing.path;
  }

  set path(value: string) {
    this.#outgoing.path = value;
  }
}

async function runRequestHooks(flow: Flow): Promise<void> {
  const { outgoing, exchange } = flow;
  let denial: string | undefined;
  const ctx = new HookRequestContext(requestInfo(exchange), outgoing, flow.upgrade, (reason) => (denial ??= reason));
  const stage = flow.upgrade ? "onWebSocket" : "onRequest";
  try {
    await runHooks(flow.hooks, (set) => (flow.upgrade ? set.onWebSocket : set.onRequest), ctx);
  } catch (error) {
    // A hook that fails cannot vouch for the request: it is refused.
    throw new ProxyError("policy_denied", `${stage} hook failed: ${(error as Error).message}`, `hook:${stage}`);
  }
  if (denial !== undefined) throw new ProxyError("policy_denied", denial, `hook:${stage}`);
}

async function runResponseHooks(flow: Flow, answer: Answer): Promise<void> {
  const { exchange } = flow;
  const ctx: ResponseContext = {
    request: { ...requestInfo(exchange), path: exchange.path },
    status: answer.status,
    headers: headerMap(
      () => answer.headers,
      (headers) => (answer.headers = headers),
    ),
  };
  await runHooks(flow.hooks, (set) => set.onResponse, ctx);
  answer.status = ctx.status;
}
