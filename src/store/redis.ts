import type { Redis } from "ioredis";

export interface RedisLog {
  warn(message: string): void;
  info(message: string): void;
}

/** How long a command may take before it fails (then the caller fails closed). */
export const REDIS_COMMAND_TIMEOUT_MS = 1000;

/** Reconnection backoff: 100 ms doubling to at most 5 s, for as long as it takes. */
export function redisBackoff(attempt: number): number {
  return Math.min(100 * 2 ** Math.min(attempt - 1, 6), 5000);
}

/** The address of a redis:// URL without any password, for messages. */
export function redisLabel(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname === "/" ? "" : parsed.pathname}`;
  } catch {
    return "redis";
  }
}

/**
 * A Redis connection for state portcullis shares across replicas (budgets; registered clients).
 * Commands never queue while it is down (enableOfflineQueue off, one try, a short timeout), so a
 * caller learns at once that it cannot reach Redis; it reconnects in the background with
 * backoff, and an outage is reported once when it starts and once when it ends, not per command.
 */
export async function connectRedis(url: string, log: RedisLog, purpose: string): Promise<Redis> {
  const label = redisLabel(url);
  // Loaded only by a policy that uses Redis: the client costs every process's start-up time otherwise.
  const { Redis: RedisClient } = await import("ioredis");
  const redis = new RedisClient(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    connectTimeout: 2000,
    retryStrategy: redisBackoff,
    // The script cache survives a reconnect to the same server; a new server gets EVAL then EVALSHA.
    enableReadyCheck: true,
  });
  let down = false;
  redis.on("error", (error: Error) => {
    if (down) return;
    down = true;
    log.warn(`${purpose}: Redis at ${label} cannot be reached (${error.message}); retrying with backoff`);
  });
  redis.on("ready", () => {
    if (!down) return;
    down = false;
    log.info(`${purpose}: Redis at ${label} is reachable again`);
  });
  redis.on("end", () => undefined);
  return redis;
}

/**
 * Resolves once a new connection is first up (at most `timeoutMs`), so the first commands after
 * start do not fail while it is still connecting; later outages fail at once instead.
 */
export function firstConnection(redis: Redis, timeoutMs = 2000): Promise<void> {
  if (redis.status === "ready") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      redis.off("ready", done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    timer.unref();
    redis.once("ready", done);
  });
}
