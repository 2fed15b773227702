import { type Admission, type BudgetStore, type Counter, type CounterCheck, type CounterKey, counterId, isSpent } from "./store.js";
import type { StateFile } from "./state-file.js";

/**
 * Counters in this process's memory (the primary's, with --workers). Windows that have ended
 * are dropped as they are met. With a state file, counters are loaded at start and written
 * back (atomically, at a bounded rate) as they change.
 */
export class MemoryBudgetStore implements BudgetStore {
  private readonly counters_ = new Map<string, Counter>();

  constructor(
    private readonly stateFile?: StateFile,
    private readonly now: () => number = Date.now,
  ) {
    for (const counter of stateFile?.load() ?? []) this.counters_.set(counterId(counter), counter);
  }

  private live(key: CounterKey): Counter {
    const id = counterId(key);
    let counter = this.counters_.get(id);
    if (!counter) {
      counter = { rule: key.rule, client: key.client, windowStart: key.windowStart, windowEnd: key.windowEnd, tokens: 0, requests: 0 };
      this.counters_.set(id, counter);
    }
    return counter;
  }

  private prune(): void {
    const now = this.now();
    for (const [id, counter] of this.counters_) if (counter.windowEnd <= now) this.counters_.delete(id);
  }

  admitNow(checks: readonly CounterCheck[]): Admission {
    for (const check of checks) {
      const counter = this.counters_.get(counterId(check));
      if (counter && isSpent(counter, check)) return { ok: false, spent: check, counter: { ...counter } };
    }
    for (const check of checks) this.live(check).requests++;
    this.stateFile?.changed(() => this.snapshot());
    return { ok: true };
  }

  peekNow(checks: readonly CounterCheck[]): CounterCheck | undefined {
    return checks.find((check) => {
      const counter = this.counters_.get(counterId(check));
      return counter !== undefined && isSpent(counter, check);
    });
  }

  peek(checks: readonly CounterCheck[]): Promise<CounterCheck | undefined> {
    return Promise.resolve(this.peekNow(checks));
  }

  chargeNow(keys: readonly CounterKey[], tokens: number): void {
    if (tokens <= 0) return;
    for (const key of keys) this.live(key).tokens += tokens;
    this.stateFile?.changed(() => this.snapshot());
  }

  snapshot(): Counter[] {
    this.prune();
    return [...this.counters_.values()].map((counter) => ({ ...counter }));
  }

  admit(checks: readonly CounterCheck[]): Promise<Admission> {
    return Promise.resolve(this.admitNow(checks));
  }

  charge(keys: readonly CounterKey[], tokens: number): Promise<void> {
    this.chargeNow(keys, tokens);
    return Promise.resolve();
  }

  counters(): Promise<Counter[]> {
    return Promise.resolve(this.snapshot());
  }

  async close(): Promise<void> {
    await this.stateFile?.flush(() => this.snapshot());
  }
}
