import type { Policy } from "../policy/schema.js";

/** Settings read once, when the listeners and servers are made: a reload cannot apply them. */
const RESTART_ONLY: { name: string; read: (policy: Policy) => unknown }[] = [
  { name: "proxy.listen", read: (policy) => policy.proxy.listen },
  { name: "admin.listen", read: (policy) => policy.admin.listen },
  { name: "proxy.http2", read: (policy) => policy.proxy.http2 },
  { name: "proxy.max_concurrent_streams", read: (policy) => policy.proxy.max_concurrent_streams },
  // The CA and the certificates forged under it are loaded once: someone rotating a CA must be told it is not rotated yet.
  { name: "ca.dir", read: (policy) => policy.ca.dir },
];

/** The names of the restart-only settings that differ between the running policy and a reloaded one. */
export function restartOnlyChanges(running: Policy, next: Policy): string[] {
  return RESTART_ONLY.filter((setting) => JSON.stringify(setting.read(running)) !== JSON.stringify(setting.read(next))).map((setting) => setting.name);
}
