import { anyHostMatches } from "../policy/hosts.js";
import { pathsInScope } from "../policy/paths.js";
import type { BudgetRule } from "../policy/schema.js";
import { windowAt } from "../policy/window.js";
import { type Admission, type BudgetStore, type Counter, type CounterCheck, type CounterKey, counterId, isSpent } from "./store.js";

/** One counter as GET /budgets and explain show it (SPEC section 10). */
export interface BudgetRow {
  rule: string;
  client: string | null;
  window_start: string;
  tokens: number;
  requests: number;
  limit_tokens: number | null;
  limit_requests: number | null;
}

/** The budget rules of the running policy over the store that holds their counters. */
export class BudgetLedger {
  private readonly byName: Map<string, BudgetRule>;

  constructor(
    readonly rules: readonly BudgetRule[],
    readonly store: BudgetStore,
    private readonly now: () => number = Date.now,
  ) {
    this.byName = new Map(rules.map((rule) => [rule.name, rule]));
  }

  /** The rules whose hosts, paths and clients cover a request: any reading of its path in a rule's `paths` puts it in scope. */
  rulesFor(host: string, pathReadings: readonly string[], client: string | null): BudgetRule[] {
    return this.rules.filter(
      (rule) =>
        anyHostMatches(rule.hosts, host) &&
        pathsInScope(rule.paths, pathReadings) &&
        (!rule.clients || (client !== null && rule.clients.includes(client))),
    );
  }

  /** Each rule's counter for this client in the window that holds now. */
  checksFor(rules: readonly BudgetRule[], client: string | null): CounterCheck[] {
    const now = this.now();
    return rules.map((rule) => {
      const window = windowAt(now, rule.window);
      return { rule: rule.name, client, windowStart: window.start, windowEnd: window.end, limitTokens: rule.tokens, limitRequests: rule.requests };
    });
  }

  admit(checks: readonly CounterCheck[]): Promise<Admission> {
    return this.store.admit(checks);
  }

  peek(checks: readonly CounterCheck[]): Promise<CounterCheck | undefined> {
    return this.store.peek(checks);
  }

  charge(keys: readonly CounterKey[], tokens: number): Promise<void> {
    return this.store.charge(keys, tokens);
  }

  private row(counter: Counter): BudgetRow {
    const rule = this.byName.get(counter.rule);
    return {
      rule: counter.rule,
      client: counter.client,
      window_start: new Date(counter.windowStart).toISOString(),
      tokens: counter.tokens,
      requests: counter.requests,
      limit_tokens: rule?.tokens ?? null,
      limit_requests: rule?.requests ?? null,
    };
  }

  /** Every counter of a window that has not ended, by rule then client. */
  async rows(): Promise<BudgetRow[]> {
    const now = this.now();
    const counters = (await this.store.counters()).filter((counter) => counter.windowEnd > now);
    return counters
      .map((counter) => this.row(counter))
      .sort((a, b) => a.rule.localeCompare(b.rule) || (a.client ?? "").localeCompare(b.client ?? "") || a.window_start.localeCompare(b.window_start));
  }

  /** This client's current counters under these rules (zero where nothing was spent yet), and whether each is spent. */
  async current(rules: readonly BudgetRule[], client: string | null): Promise<(BudgetRow & { window_end: string; spent: boolean })[]> {
    const checks = this.checksFor(rules, client);
    const known = new Map((await this.store.counters()).map((counter) => [counterId(counter), counter]));
    return checks.map((check) => {
      const counter = known.get(counterId(check)) ?? { ...check, tokens: 0, requests: 0 };
      return { ...this.row(counter), window_end: new Date(check.windowEnd).toISOString(), spent: isSpent(counter, check) };
    });
  }
}
