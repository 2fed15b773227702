import cluster from "node:cluster";
import { connectRedis, type RedisLog } from "../store/redis.js";
import type { BudgetRule, BudgetsSection } from "../policy/schema.js";
import { IpcBudgetStore } from "./ipc-store.js";
import { BudgetLedger } from "./ledger.js";
import { MemoryBudgetStore } from "./memory-store.js";
import { RedisBudgetStore } from "./redis-store.js";
import { StateFile } from "./state-file.js";
import type { BudgetStore } from "./store.js";

/** Where this process keeps budget counters: its own memory, the cluster primary's, or Redis. */
export type StoreRole = "process" | "worker" | "primary";

export function storeRole(): StoreRole {
  return cluster.isWorker && process.env.PORTCULLIS_WORKER === "1" ? "worker" : "process";
}

export interface StoreConfig {
  section: BudgetsSection;
  /** state_file resolved against the policy file's folder */
  stateFile: string | undefined;
}

function signature(config: StoreConfig): string {
  return `${config.section.store}\n${config.stateFile ?? ""}`;
}

/** Opens the store a budgets section names; window lengths come from the current rules. */
export function openBudgetStore(config: StoreConfig, role: StoreRole, log: RedisLog, windows: () => readonly BudgetRule[]): BudgetStore {
  const { store } = config.section;
  if (store !== "memory") {
    return new RedisBudgetStore(connectRedis(store, log, "budgets"), (name) => windows().find((rule) => rule.name === name)?.window);
  }
  if (role === "worker") return new IpcBudgetStore();
  return new MemoryBudgetStore(config.stateFile ? new StateFile(config.stateFile, (message) => log.warn(message)) : undefined);
}

/**
 * The budget store across policy reloads: kept while the policy names the same store (counters
 * survive a SIGHUP), replaced when it names another; a ledger for each policy's rules.
 */
export class BudgetStores {
  private current: { signature: string; store: BudgetStore } | undefined;
  private rules: readonly BudgetRule[] = [];

  constructor(
    private readonly role: StoreRole,
    private readonly log: RedisLog,
  ) {}

  /** The ledger for a policy; none when it has no budget rules. */
  ledgerFor(config: StoreConfig): BudgetLedger | undefined {
    this.rules = config.section.rules;
    if (config.section.rules.length === 0) {
      void this.current?.store.close();
      this.current = undefined;
      return undefined;
    }
    const wanted = signature(config);
    if (this.current?.signature !== wanted) {
      void this.current?.store.close();
      this.current = { signature: wanted, store: openBudgetStore(config, this.role, this.log, () => this.rules) };
    }
    return new BudgetLedger(config.section.rules, this.current.store);
  }

  async close(): Promise<void> {
    await this.current?.store.close();
    this.current = undefined;
  }
}
