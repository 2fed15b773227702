import { resolveFrom, type LoadedPolicy } from "../policy/load.js";

/** Settings read once, when the listeners and servers are made: a reload cannot apply them. */
const RESTART_ONLY: { name: string; read: (loaded: LoadedPolicy) => unknown }[] = [
  { name: "proxy.listen", read: ({ policy }) => policy.proxy.listen },
  { name: "admin.listen", read: ({ policy }) => policy.admin.listen },
  { name: "proxy.http2", read: ({ policy }) => policy.proxy.http2 },
  { name: "proxy.max_concurrent_streams", read: ({ policy }) => policy.proxy.max_concurrent_streams },
  // The CA and the certificates forged under it are loaded once: someone rotating a CA must be told it is not rotated yet.
  { name: "ca.dir", read: (loaded) => resolveFrom(loaded, loaded.policy.ca.dir) },
];

/**
 * The names of the restart-only settings in which a reloaded policy differs from the one the
 * process started with (what it still runs, however many reloads came between).
 */
export function restartOnlyChanges(started: LoadedPolicy, next: LoadedPolicy): string[] {
  return RESTART_ONLY.filter((setting) => JSON.stringify(setting.read(started)) !== JSON.stringify(setting.read(next))).map((setting) => setting.name);
}
