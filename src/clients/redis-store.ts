import { Redis } from "ioredis";
import { REDIS_COMMAND_TIMEOUT_MS, redisBackoff, redisLabel } from "../store/redis.js";
import type { ClientStore, StoreChange } from "./store.js";
import { expiresAtMs, isRegisteredClient, type RegisteredClient } from "./registered-client.js";

const KEY_PREFIX = "portcullis:clients:";
const CONNECT_TIMEOUT_MS = 5000;

type Message = { type: "created"; client: RegisteredClient } | { type: "removed"; name: string };

/** Connects, or fails with the reason: a registry that cannot be reached at start is a reason not to start. */
async function connect(redis: Redis, url: string): Promise<void> {
  let cause: Error | undefined;
  const remember = (error: Error) => (cause ??= error);
  redis.on("error", remember);
  try {
    await redis.connect();
  } catch (error) {
    redis.disconnect();
    // ioredis rejects with "Connection is closed"; the socket's own error says why.
    throw new Error(`admin.state ${url}: cannot connect to Redis (${(cause ?? (error as Error)).message})`);
  } finally {
    redis.off("error", remember);
  }
}

/**
 * admin.state: redis://HOST:PORT[/DB], shared by every replica. One key per client
 * (`portcullis:clients:NAME`, a JSON record with token digest, rules, credentials), set with
 * NX (a name is taken once, whichever replica asks) and PX (Redis forgets it when it expires).
 * Every change is published on a channel each replica listens to, so a creation or revocation
 * made on one is seen by all at once; after a reconnect the whole set is read again, since
 * messages published while a replica was away are not replayed.
 */
export class RedisStore implements ClientStore {
  readonly shared = true;
  readonly description: string;
  private readonly redis: Redis;
  private readonly subscriber: Redis;
  private readonly channel: string;
  private started = false;

  private constructor(url: string) {
    this.description = `redis ${redisLabel(url)}`;
    // No retries until the first connection worked: a Redis that is not there at start fails the start at once.
    // After that, the same connection policy as every Redis portcullis shares state through (store/redis.ts).
    const retryStrategy = (times: number) => (this.started ? redisBackoff(times) : null);
    const options = { lazyConnect: true, connectTimeout: CONNECT_TIMEOUT_MS, commandTimeout: REDIS_COMMAND_TIMEOUT_MS, maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy };
    this.redis = new Redis(url, options);
    // A subscribed connection can do nothing else, so it is a second one.
    this.subscriber = new Redis(url, { ...options, enableOfflineQueue: true });
    // Channels are not per database: the database is in the channel's name.
    this.channel = `${KEY_PREFIX}changes:${this.redis.options.db ?? 0}`;
    for (const connection of [this.redis, this.subscriber]) connection.on("error", () => undefined);
  }

  static async open(url: string): Promise<RedisStore> {
    const store = new RedisStore(url);
    await connect(store.redis, redisLabel(url));
    await connect(store.subscriber, redisLabel(url));
    store.started = true;
    return store;
  }

  /** Both connections up: only then are other replicas' revocations heard. */
  healthy(): boolean {
    return this.redis.status === "ready" && this.subscriber.status === "ready";
  }

  async load(): Promise<RegisteredClient[]> {
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, batch] = await this.redis.scan(cursor, "MATCH", `${KEY_PREFIX}*`, "COUNT", 1000);
      cursor = next;
      keys.push(...batch.filter((key) => !key.startsWith(`${KEY_PREFIX}changes:`)));
    } while (cursor !== "0");
    const clients: RegisteredClient[] = [];
    for (let i = 0; i < keys.length; i += 500) {
      const values = await this.redis.mget(keys.slice(i, i + 500));
      for (const value of values) {
        const client = value ? this.parse(value) : undefined;
        if (client && expiresAtMs(client) > Date.now()) clients.push(client);
      }
    }
    return clients;
  }

  async create(client: RegisteredClient): Promise<boolean> {
    const ttlMs = Math.max(1, expiresAtMs(client) - Date.now());
    const set = await this.redis.set(KEY_PREFIX + client.name, JSON.stringify(client), "PX", ttlMs, "NX");
    if (set !== "OK") return false;
    await this.publish({ type: "created", client });
    return true;
  }

  async remove(name: string): Promise<boolean> {
    const removed = (await this.redis.del(KEY_PREFIX + name)) > 0;
    // Published even when the key was already gone (expired): a replica may still hold it.
    await this.publish({ type: "removed", name });
    return removed;
  }

  watch(onChange: (change: StoreChange) => void): void {
    this.subscriber.on("message", (channel: string, text: string) => {
      if (channel !== this.channel) return;
      const message = this.parseMessage(text);
      if (message) onChange(message);
    });
    // Connected already: every later "ready" is a reconnect (ioredis subscribes again). Once both
    // connections are back, the whole set is read: what was published meanwhile is lost.
    const resync = () => {
      if (this.healthy()) this.load().then((clients) => onChange({ type: "reset", clients }), () => undefined);
    };
    this.subscriber.on("ready", resync);
    this.redis.on("ready", resync);
    void this.subscriber.subscribe(this.channel).catch(() => undefined);
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.subscriber.quit(), this.redis.quit()]);
  }

  private async publish(message: Message): Promise<void> {
    await this.redis.publish(this.channel, JSON.stringify(message));
  }

  private parse(text: string): RegisteredClient | undefined {
    try {
      const value: unknown = JSON.parse(text);
      return isRegisteredClient(value) ? value : undefined;
    } catch {
      return undefined;
    }
  }

  private parseMessage(text: string): Message | undefined {
    try {
      const value = JSON.parse(text) as Partial<Message>;
      if (value.type === "created" && isRegisteredClient(value.client)) return { type: "created", client: value.client };
      if (value.type === "removed" && typeof value.name === "string") return { type: "removed", name: value.name };
    } catch {
      // not ours
    }
    return undefined;
  }
}
