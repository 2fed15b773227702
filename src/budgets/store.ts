/** One budget counter: a rule's spend by one client in one window. */
export interface CounterKey {
  rule: string;
  client: string | null;
  /** Window start and end, milliseconds since the epoch (UTC). */
  windowStart: number;
  windowEnd: number;
}

/** A counter to check before a request goes out, with the rule's limits (absent: not limited). */
export interface CounterCheck extends CounterKey {
  limitTokens?: number;
  limitRequests?: number;
}

export interface Counter extends CounterKey {
  tokens: number;
  requests: number;
}

/** Every counter was under its limits and counts this request; or the first one that is spent. */
export type Admission = { ok: true } | { ok: false; spent: CounterCheck; counter: Counter };

/**
 * Where budget counters live. `admit` is atomic: it checks every counter and, only when none is
 * spent, counts one request on each, so concurrent requests cannot all slip under a request
 * limit. Tokens are charged when an answer ends. A store that cannot be reached rejects with
 * BudgetStoreUnavailable (requests under a budget are then refused: fail closed).
 */
export interface BudgetStore {
  admit(checks: readonly CounterCheck[]): Promise<Admission>;
  charge(keys: readonly CounterKey[], tokens: number): Promise<void>;
  /** The first of these counters that is spent, counting nothing (a new response inside an admitted WebSocket session). */
  peek(checks: readonly CounterCheck[]): Promise<CounterCheck | undefined>;
  /** The counters of windows that have not ended. */
  counters(): Promise<Counter[]>;
  close(): Promise<void>;
}

export class BudgetStoreUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BudgetStoreUnavailable";
  }
}

/** Whether a counter is spent: the next request would go over a limit. */
export function isSpent(counter: Pick<Counter, "tokens" | "requests">, check: Pick<CounterCheck, "limitTokens" | "limitRequests">): boolean {
  return (check.limitTokens !== undefined && counter.tokens >= check.limitTokens) || (check.limitRequests !== undefined && counter.requests >= check.limitRequests);
}

/** One text per counter (rule and client percent-encoded, so neither can run into the other). */
export function counterId(key: CounterKey): string {
  return `${key.windowStart}:${encodeURIComponent(key.rule)}:${key.client === null ? "" : encodeURIComponent(key.client)}`;
}
