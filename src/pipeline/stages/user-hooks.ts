import { ProxyError } from "../../core/errors.js";
import { headerMap, requestInfo, runHooks, type RequestContext, type ResponseContext } from "../hooks.js";
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

async function runRequestHooks(flow: Flow): Promise<void> {
  const { outgoing, exchange } = flow;
  let denial: string | undefined;
  // `path` is a plain property, copied back once the hooks ran, not an accessor: an object
  // literal's accessor gets a hidden class of its own, which keeps the exchange alive until a
  // full collection (test/object-literal-accessors.test.ts).
  const ctx: RequestContext = {
    ...requestInfo(exchange),
    path: outgoing.path,
    headers: headerMap(
      () => outgoing.headers,
      (headers) => (outgoing.headers = headers),
    ),
    webSocket: flow.upgrade,
    deny: (reason) => (denial ??= reason),
  };
  const stage = flow.upgrade ? "onWebSocket" : "onRequest";
  try {
    await runHooks(flow.hooks, (set) => (flow.upgrade ? set.onWebSocket : set.onRequest), ctx);
    outgoing.path = ctx.path;
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
