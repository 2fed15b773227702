export { createProxy, type Proxy, type ProxyOptions } from "./proxy/create-proxy.js";
export { headroomFromEnv, keepHeapHeadroom } from "./proxy/heap-headroom.js";
export { loadPolicyFile, parsePolicy, PolicyInvalidError, type LoadedPolicy } from "./policy/load.js";
export type { Policy, PolicyInput } from "./policy/schema.js";
export { initCa } from "./ca/authority.js";
export type { AuditRecord } from "./core/audit-record.js";
export type { Hook, Hooks, HeaderMap, RequestContext, RequestInfo, ResponseContext } from "./pipeline/hooks.js";
