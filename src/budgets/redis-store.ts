import type { Redis } from "ioredis";
import { firstConnection } from "../store/redis.js";
import { type Admission, BudgetStoreUnavailable, type BudgetStore, type Counter, type CounterCheck, type CounterKey, counterId, isSpent } from "./store.js";

const PREFIX = "portcullis:budget:";

/**
 * Checks every counter of a request and, only when none is spent, counts the request on each
 * and sets each to expire at its window's end; one script, so atomic across every replica.
 * ARGV per key: token limit, request limit (-1: none), expiry (seconds since the epoch).
 * Returns 0, or the 1-based index of the first spent counter with its tokens and requests.
 */
const ADMIT = `
for i, key in ipairs(KEYS) do
  local limitTokens = tonumber(ARGV[(i - 1) * 3 + 1])
  local limitRequests = tonumber(ARGV[(i - 1) * 3 + 2])
  local seen = redis.call('HMGET', key, 't', 'r')
  local tokens = tonumber(seen[1]) or 0
  local requests = tonumber(seen[2]) or 0
  if (limitTokens >= 0 and tokens >= limitTokens) or (limitRequests >= 0 and requests >= limitRequests) then
    return {i, tokens, requests}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'r', 1)
  redis.call('EXPIREAT', key, ARGV[(i - 1) * 3 + 3])
end
return {0, 0, 0}
`;

/**
 * Adds tokens to every counter and sets each to expire at its window's end, atomically.
 * ARGV per key: tokens, expiry (seconds since the epoch).
 */
const CHARGE = `
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 't', ARGV[(i - 1) * 2 + 1])
  redis.call('EXPIREAT', key, ARGV[(i - 1) * 2 + 2])
end
return 0
`;

type AdmitCommand = (keyCount: number, ...args: (string | number)[]) => Promise<[number, number, number]>;
type ChargeCommand = (keyCount: number, ...args: (string | number)[]) => Promise<number>;

const expiry = (key: CounterKey) => Math.ceil(key.windowEnd / 1000);

function parseId(id: string): Pick<Counter, "rule" | "client" | "windowStart"> | undefined {
  const [start, rule, client] = id.split(":");
  if (start === undefined || rule === undefined || client === undefined) return undefined;
  return { windowStart: Number(start), rule: decodeURIComponent(rule), client: client === "" ? null : decodeURIComponent(client) };
}

/** Counters in Redis, shared by every replica and worker: one hash (t: tokens, r: requests) per counter. */
export class RedisBudgetStore implements BudgetStore {
  private redis: Redis | undefined;
  private admitScript: AdmitCommand | undefined;
  private chargeScript: ChargeCommand | undefined;
  private readonly connected: Promise<void>;
  /**
   * Tokens charged and not yet sent, summed by key. One charge is on the wire at a time and the
   * next carries everything charged meanwhile: under load, one command for many answers (a
   * command costs the proxy far more CPU than the sums), and never later than one round trip.
   */
  private readonly unsent = new Map<string, { tokens: number; expireAt: number }>();
  /** The write that will carry the next charges (gathering them until the one before is answered). */
  private nextCharge: Promise<void> | undefined;
  /** The last charge write, settled either way: the next one starts after it, close waits for it. */
  private lastCharge: Promise<void> = Promise.resolve();

  constructor(
    private readonly connecting: Promise<Redis>,
    /** Window lengths by rule name, to report each counter's window end. */
    private readonly windowOf: (rule: string) => number | undefined,
  ) {
    this.connected = connecting.then((redis) => {
      redis.defineCommand("portcullisBudgetAdmit", { lua: ADMIT });
      redis.defineCommand("portcullisBudgetCharge", { lua: CHARGE });
      const scripts = redis as unknown as { portcullisBudgetAdmit: AdmitCommand; portcullisBudgetCharge: ChargeCommand };
      this.admitScript = scripts.portcullisBudgetAdmit.bind(redis);
      this.chargeScript = scripts.portcullisBudgetCharge.bind(redis);
      return firstConnection(redis).then(() => void (this.redis = redis));
    });
    this.connected.catch(() => undefined);
  }

  /** Before the first connection is up, commands wait for it; after, an outage fails them at once. */
  private async up(): Promise<{ redis: Redis; admit: AdmitCommand; charge: ChargeCommand }> {
    if (!this.redis) await this.connected.catch((error: unknown) => this.unavailable(error));
    return { redis: this.redis!, admit: this.admitScript!, charge: this.chargeScript! };
  }

  private unavailable(error: unknown): never {
    throw new BudgetStoreUnavailable(`budget store (Redis) cannot be reached: ${(error as Error).message}`);
  }

  async admit(checks: readonly CounterCheck[]): Promise<Admission> {
    if (checks.length === 0) return { ok: true };
    const args = checks.flatMap((check) => [check.limitTokens ?? -1, check.limitRequests ?? -1, expiry(check)]);
    let result: [number, number, number];
    const { admit } = await this.up();
    try {
      result = await admit(checks.length, ...checks.map((check) => PREFIX + counterId(check)), ...args);
    } catch (error) {
      this.unavailable(error);
    }
    const [index, tokens, requests] = result;
    if (index === 0) return { ok: true };
    const spent = checks[index - 1]!;
    return { ok: false, spent, counter: { rule: spent.rule, client: spent.client, windowStart: spent.windowStart, windowEnd: spent.windowEnd, tokens, requests } };
  }

  async peek(checks: readonly CounterCheck[]): Promise<CounterCheck | undefined> {
    if (checks.length === 0) return undefined;
    const { redis } = await this.up();
    const pipeline = redis.pipeline();
    for (const check of checks) pipeline.hmget(PREFIX + counterId(check), "t", "r");
    let values: [Error | null, unknown][];
    try {
      values = (await pipeline.exec()) ?? [];
    } catch (error) {
      this.unavailable(error);
    }
    return checks.find((check, index) => {
      const [error, fields] = values[index] ?? [];
      if (error) this.unavailable(error);
      const [tokens, requests] = Array.isArray(fields) ? fields : [];
      return isSpent({ tokens: Number(tokens ?? 0), requests: Number(requests ?? 0) }, check);
    });
  }

  /** Resolves once the tokens are in Redis (with whatever else was charged meanwhile). */
  charge(keys: readonly CounterKey[], tokens: number): Promise<void> {
    // HINCRBY takes integers only, and one it refused would stop the script for every counter after it.
    const amount = Math.min(Math.round(tokens), Number.MAX_SAFE_INTEGER);
    if (!(amount > 0) || keys.length === 0) return Promise.resolve();
    for (const key of keys) {
      const id = PREFIX + counterId(key);
      const held = this.unsent.get(id);
      if (held) held.tokens = Math.min(held.tokens + amount, Number.MAX_SAFE_INTEGER);
      else this.unsent.set(id, { tokens: amount, expireAt: expiry(key) });
    }
    if (!this.nextCharge) {
      const write = this.lastCharge.then(() => {
        this.nextCharge = undefined;
        return this.writeUnsent();
      });
      this.nextCharge = write;
      this.lastCharge = write.catch(() => undefined);
    }
    return this.nextCharge;
  }

  private async writeUnsent(): Promise<void> {
    const batch = [...this.unsent];
    this.unsent.clear();
    const { charge } = await this.up();
    try {
      await charge(batch.length, ...batch.map(([id]) => id), ...batch.flatMap(([, held]) => [held.tokens, held.expireAt]));
    } catch (error) {
      this.unavailable(error);
    }
  }

  async counters(): Promise<Counter[]> {
    const ids: string[] = [];
    const { redis } = await this.up();
    try {
      let cursor = "0";
      do {
        const [next, found] = await redis.scan(cursor, "MATCH", `${PREFIX}*`, "COUNT", 500);
        cursor = next;
        ids.push(...found);
      } while (cursor !== "0" && ids.length < 100_000);
      const pipeline = redis.pipeline();
      for (const id of ids) pipeline.hmget(id, "t", "r");
      const values = ids.length ? ((await pipeline.exec()) ?? []) : [];
      const counters: Counter[] = [];
      ids.forEach((id, index) => {
        const parsed = parseId(id.slice(PREFIX.length));
        const [error, fields] = values[index] ?? [];
        if (!parsed || error || !Array.isArray(fields)) return;
        const length = this.windowOf(parsed.rule);
        counters.push({ ...parsed, windowEnd: length ? parsed.windowStart + length : parsed.windowStart, tokens: Number(fields[0] ?? 0), requests: Number(fields[1] ?? 0) });
      });
      return counters;
    } catch (error) {
      this.unavailable(error);
    }
  }

  async close(): Promise<void> {
    // Charges made while the last write was on the wire start another one: wait for that too.
    let last: Promise<void>;
    do {
      last = this.lastCharge;
      await last;
    } while (last !== this.lastCharge);
    (await this.connecting.catch(() => undefined))?.disconnect();
  }
}
