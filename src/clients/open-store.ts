import type { LoadedPolicy } from "../policy/load.js";
import { resolveFrom } from "../policy/load.js";
import { FileStore } from "./file-store.js";
import { MemoryStore } from "./memory-store.js";
import type { ClientStore } from "./store.js";

/** The store admin.state names: memory, redis://…, or a file (relative to the policy file's folder). */
export async function openClientStore(loaded: LoadedPolicy): Promise<ClientStore> {
  const state = loaded.policy.admin.state;
  if (state === "memory") return new MemoryStore();
  // Loaded only when used: ioredis costs every process's start-up otherwise.
  if (/^rediss?:\/\//.test(state)) return (await import("./redis-store.js")).RedisStore.open(state);
  return new FileStore(resolveFrom(loaded, state));
}
