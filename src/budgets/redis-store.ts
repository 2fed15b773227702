import type { Redis } from "ioredis";
import { firstConnection } from "../store/redis.js";
import { type Admission, BudgetStoreUnavailable, type BudgetStore, type Counter, type CounterCheck, type CounterKey, counterId, isSpent } from "./store.js";

const PREFIX = "portcullis:budget:";

/**
 * One turn's budget work in one script, so atomic across every replica and in the order it was
 * asked for. First the charges: tokens added to each counter, each set to expire at its
 * window's end. A counter HINCRBY refuses as such (at Redis' integer limit, or not a number)
 * loses its charge and nothing else; any other refusal (out of memory) fails the whole call
 * before it has written anything, so no admission passes uncharged. Then each admission in
 * turn, as if it were alone: it checks its counters
 * and, only when none is spent, counts one request on each and sets each to expire.
 * KEYS: the charged counters, then each admission's counters.
 * ARGV: the number of charged counters; per charged counter: tokens, expiry (seconds since the
 * epoch); the number of admissions; per admission: its number of counters, then per counter:
 * token limit, request limit (-1: none), expiry.
 * Returns three numbers per admission: 0, 0, 0 when admitted, or the 1-based index (among that
 * admission's counters) of the first spent counter with its tokens and requests.
 */
const BATCH = `
local charged = tonumber(ARGV[1])
for i = 1, charged do
  local added = redis.pcall('HINCRBY', KEYS[i], 't', ARGV[i * 2])
  if type(added) == 'table' and added.err then
    if not (string.find(added.err, 'overflow', 1, true) or string.find(added.err, 'not an integer', 1, true)) then
      return redis.error_reply(added.err)
    end
  end
  redis.call('EXPIREAT', KEYS[i], ARGV[i * 2 + 1])
end
local arg = charged * 2 + 2
local key = charged
local admissions = tonumber(ARGV[arg])
local results = {}
for a = 1, admissions do
  local count = tonumber(ARGV[arg + 1])
  local first = arg + 2
  local spent = 0
  local seenTokens, seenRequests = 0, 0
  for i = 1, count do
    local limitTokens = tonumber(ARGV[first + (i - 1) * 3])
    local limitRequests = tonumber(ARGV[first + (i - 1) * 3 + 1])
    local seen = redis.call('HMGET', KEYS[key + i], 't', 'r')
    local tokens = tonumber(seen[1]) or 0
    local requests = tonumber(seen[2]) or 0
    if (limitTokens >= 0 and tokens >= limitTokens) or (limitRequests >= 0 and requests >= limitRequests) then
      spent, seenTokens, seenRequests = i, tokens, requests
      break
    end
  end
  if spent == 0 then
    for i = 1, count do
      redis.call('HINCRBY', KEYS[key + i], 'r', 1)
      redis.call('EXPIREAT', KEYS[key + i], ARGV[first + (i - 1) * 3 + 2])
    end
  end
  results[#results + 1] = spent
  results[#results + 1] = seenTokens
  results[#results + 1] = seenRequests
  key = key + count
  arg = first + count * 3 - 1
end
return results
`;

type BatchCommand = (keyCount: number, ...args: (string | number)[]) => Promise<unknown>;

/** Keys and arguments in one call at most (V8 refuses a spread of about 120,000). */
const MAX_CALL_ARGUMENTS = 8192;

/** Counters whose charges are held through an outage, at most (each is a sum, so few are needed). */
const MAX_HELD_COUNTERS = 10_000;

/** A call not sent because the connection was not ready: it certainly did not run. */
class NotSent extends Error {
  constructor(status: string) {
    super(`the connection is ${status}`);
  }
}

/** One script call's part of a turn: charged counters first, then admissions. */
interface BatchCall {
  keys: string[];
  /** Per charged counter: tokens, expiry. */
  charges: number[];
  admissions: PendingAdmission[];
  /** Per admission: its number of counters, then per counter: token limit, request limit, expiry. */
  admissionArgs: number[];
  size: number;
}

interface PendingAdmission {
  checks: readonly CounterCheck[];
  resolve(admission: Admission): void;
  reject(error: Error): void;
}

const expiry = (key: CounterKey) => Math.ceil(key.windowEnd / 1000);

function parseId(id: string): Pick<Counter, "rule" | "client" | "windowStart"> | undefined {
  const [start, rule, client] = id.split(":");
  if (start === undefined || rule === undefined || client === undefined) return undefined;
  return { windowStart: Number(start), rule: decodeURIComponent(rule), client: client === "" ? null : decodeURIComponent(client) };
}

/**
 * Counters in Redis, shared by every replica and worker: one hash (t: tokens, r: requests) per
 * counter. What one turn of the event loop asks for (the admissions of the requests it read, the
 * charges of the answers it ended) goes out as one script call when the turn ends: under load,
 * one command for several requests, since a command costs the proxy far more CPU (a write to
 * Redis' socket, a reply to read) than the script costs Redis.
 */
export class RedisBudgetStore implements BudgetStore {
  private redis: Redis | undefined;
  private batchScript: BatchCommand | undefined;
  private readonly connected: Promise<void>;
  /** Admissions asked for this turn, in order. */
  private admissions: PendingAdmission[] = [];
  /** Tokens charged this turn, summed by counter. */
  private charges = new Map<string, { tokens: number; expireAt: number }>();
  /** Those charges' callers, told when the call carrying them is answered. */
  private chargeCallers: { resolve(): void; reject(error: Error): void }[] = [];
  private flushing: NodeJS.Immediate | undefined;
  /** Calls on the wire, settled either way: close waits for them. */
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly connecting: Promise<Redis>,
    /** Window lengths by rule name, to report each counter's window end. */
    private readonly windowOf: (rule: string) => number | undefined,
  ) {
    this.connected = connecting.then((redis) => {
      redis.defineCommand("portcullisBudgetBatch", { lua: BATCH });
      this.batchScript = (redis as unknown as { portcullisBudgetBatch: BatchCommand }).portcullisBudgetBatch.bind(redis);
      // Charges held while Redis was down go out as soon as it is back.
      redis.on("ready", () => {
        if (this.charges.size > 0) this.flushAtTurnEnd();
      });
      return firstConnection(redis).then(() => void (this.redis = redis));
    });
    this.connected.catch(() => undefined);
  }

  /** Before the first connection is up, commands wait for it; after, an outage fails them at once. */
  private async up(): Promise<{ redis: Redis; batch: BatchCommand }> {
    if (!this.redis) await this.connected.catch((error: unknown) => this.unavailable(error));
    return { redis: this.redis!, batch: this.batchScript! };
  }

  private unavailable(error: unknown): never {
    throw this.unreachable(error);
  }

  private unreachable(error: unknown): BudgetStoreUnavailable {
    return error instanceof BudgetStoreUnavailable ? error : new BudgetStoreUnavailable(`budget store (Redis) cannot be reached: ${(error as Error).message}`);
  }

  admit(checks: readonly CounterCheck[]): Promise<Admission> {
    if (checks.length === 0) return Promise.resolve({ ok: true });
    return new Promise((resolve, reject) => {
      this.admissions.push({ checks, resolve, reject });
      this.flushAtTurnEnd();
    });
  }

  /**
   * Resolves once the tokens are in Redis (with whatever else was charged in the same turn).
   * Rejects when they could not go at once; while Redis is down they are held and sent when it is back.
   */
  charge(keys: readonly CounterKey[], tokens: number): Promise<void> {
    // HINCRBY takes integers only, and one it refused would lose every charge of its call.
    const amount = Math.min(Math.round(tokens), Number.MAX_SAFE_INTEGER);
    if (!(amount > 0) || keys.length === 0) return Promise.resolve();
    for (const key of keys) {
      const id = PREFIX + counterId(key);
      const held = this.charges.get(id);
      if (held) held.tokens = Math.min(held.tokens + amount, Number.MAX_SAFE_INTEGER);
      else this.charges.set(id, { tokens: amount, expireAt: expiry(key) });
    }
    return new Promise((resolve, reject) => {
      this.chargeCallers.push({ resolve, reject });
      this.flushAtTurnEnd();
    });
  }

  private flushAtTurnEnd(): void {
    this.flushing ??= setImmediate(() => this.flush());
  }

  /**
   * Sends this turn's charges and admissions, as one call unless they would overflow a call's
   * arguments (a stalled loop's backlog), and answers each caller from its call's result.
   */
  private flush(): void {
    if (this.flushing) clearImmediate(this.flushing);
    this.flushing = undefined;
    const { admissions, charges, chargeCallers } = this;
    if (admissions.length === 0 && charges.size === 0) return;
    this.admissions = [];
    this.charges = new Map();
    this.chargeCallers = [];
    const calls: BatchCall[] = [];
    let call: BatchCall | undefined;
    const room = (size: number) => {
      if (!call || (call.size > 0 && call.size + size > MAX_CALL_ARGUMENTS)) calls.push((call = { keys: [], charges: [], admissions: [], admissionArgs: [], size: 0 }));
      call.size += size;
      return call;
    };
    for (const [id, { tokens, expireAt }] of charges) {
      const into = room(3);
      into.keys.push(id);
      into.charges.push(tokens, expireAt);
    }
    for (const admission of admissions) {
      const into = room(1 + admission.checks.length * 4);
      into.admissions.push(admission);
      into.admissionArgs.push(admission.checks.length);
      for (const check of admission.checks) {
        into.keys.push(PREFIX + counterId(check));
        into.admissionArgs.push(check.limitTokens ?? -1, check.limitRequests ?? -1, expiry(check));
      }
    }
    const sent = calls.map((batch) => this.send(batch));
    if (chargeCallers.length === 0) return;
    void Promise.all(sent).then((answered) => {
      const failure = answered.find((outcome) => outcome !== true);
      for (const caller of chargeCallers) failure ? caller.reject(failure) : caller.resolve();
    });
  }

  /** One script call; settles its admissions, and resolves true or with the failure (never rejects). */
  private send(call: BatchCall): Promise<true | BudgetStoreUnavailable> {
    const sent = this.up()
      .then(({ redis, batch }) => {
        // An outage starts with the socket ended while the status still says ready (until its close event).
        if (redis.status !== "ready" || !redis.stream.writable) throw new NotSent(redis.status === "ready" ? "closing" : redis.status);
        return batch(call.keys.length, ...call.keys, call.charges.length / 2, ...call.charges, call.admissions.length, ...call.admissionArgs);
      })
      .then((results): true => {
        const answers = call.admissions.map((admission, index) => this.admission(admission.checks, results, index));
        call.admissions.forEach((admission, index) => admission.resolve(answers[index]!));
        return true;
      })
      .catch((error: unknown) => {
        const failure = this.unreachable(error);
        if (error instanceof NotSent) this.hold(call);
        for (const admission of call.admissions) admission.reject(failure);
        return failure;
      });
    this.inFlight.add(sent);
    void sent.then(() => this.inFlight.delete(sent));
    return sent;
  }

  /**
   * Keeps the charges of a call that never left (Redis down) for the next call, so the tokens of
   * answers that ended during an outage still count once it is over. A call that may have run
   * (a timeout, a connection lost on the way) is not repeated: a charge counts at most once.
   */
  private hold(call: BatchCall): void {
    const now = Date.now() / 1000;
    for (let i = 0; i < call.charges.length / 2; i++) {
      const id = call.keys[i]!;
      const tokens = call.charges[i * 2]!;
      const expireAt = call.charges[i * 2 + 1]!;
      // A window that has ended counts for nothing any more: it would only take a live counter's place.
      if (expireAt <= now) continue;
      const held = this.charges.get(id);
      if (held) held.tokens = Math.min(held.tokens + tokens, Number.MAX_SAFE_INTEGER);
      else if (this.charges.size < MAX_HELD_COUNTERS) this.charges.set(id, { tokens, expireAt });
    }
  }

  private admission(checks: readonly CounterCheck[], results: unknown, index: number): Admission {
    const answer = Array.isArray(results) ? results.slice(index * 3, index * 3 + 3).map(Number) : [];
    const [spentIndex, tokens, requests] = answer;
    if (answer.length !== 3 || !Number.isInteger(spentIndex) || spentIndex! < 0 || spentIndex! > checks.length) throw new Error("unexpected reply to the budget script");
    if (spentIndex === 0) return { ok: true };
    const spent = checks[spentIndex! - 1]!;
    return { ok: false, spent, counter: { rule: spent.rule, client: spent.client, windowStart: spent.windowStart, windowEnd: spent.windowEnd, tokens: tokens!, requests: requests! } };
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
    // What this turn asked for goes out now; calls answered may be followed by charges they caused.
    while (this.flushing || this.inFlight.size > 0) {
      if (this.flushing) this.flush();
      await Promise.all(this.inFlight);
    }
    (await this.connecting.catch(() => undefined))?.disconnect();
  }
}
