import type { Logger } from "pino";
import type { ProxyMetrics } from "../admin/metrics.js";
import type { BudgetLedger } from "../budgets/ledger.js";
import type { Upstream } from "../core/messages.js";
import type { Identities } from "../credentials/identity.js";
import type { SecretStore } from "../credentials/secrets.js";
import type { AuditLog } from "../log/loggers.js";
import type { Scrubber } from "../log/scrub.js";
import type { PolicyView } from "../policy/decide.js";
import type { DestinationGuard } from "../policy/destinations.js";
import type { Policy } from "../policy/schema.js";
import type { Hooks } from "./hooks.js";

/** Everything that changes together when the policy is reloaded. */
export interface PolicyState extends PolicyView {
  readonly policy: Policy;
  readonly upstream: Upstream;
  /** Host patterns tunnelled without interception. */
  readonly passthrough: readonly string[];
  readonly secrets: SecretStore;
  readonly identities: Identities;
  readonly guard: DestinationGuard;
  /** The budget rules and their counters; absent when the policy has none (and in explain's dry run). */
  readonly budgets?: BudgetLedger;
  /** A client registered at run time: the names of the file's credentials enabled for it (no others are). */
  clientCredentials?(client: string): readonly string[] | undefined;
}

/** What the pipeline shares across exchanges: the current policy state and the process-wide services. */
export interface PipelineRuntime {
  state: PolicyState;
  readonly audit: AuditLog;
  readonly diagnostics: Logger;
  readonly scrubber: Scrubber;
  readonly metrics: ProxyMetrics;
  /** Programmatic hooks (createProxy's onRequest/onResponse/onWebSocket), run in order. */
  readonly hooks: Hooks[];
}
