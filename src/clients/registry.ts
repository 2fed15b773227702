import { EventEmitter } from "node:events";
import { timingSafeEqual } from "node:crypto";
import type { Rule } from "../policy/schema.js";
import { REDACTED } from "../core/audit-record.js";
import type { Scrubber } from "../log/scrub.js";
import type { ClientStore, StoreChange } from "./store.js";
import { expiresAtMs, newToken, tokenDigest, type RegisteredClient } from "./registered-client.js";

/** A base64url run exactly as long as a token (32 bytes), not part of a longer one. */
const TOKEN_SHAPED = /(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])/g;

/** setTimeout's longest delay; a later expiry re-arms the timer when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export type RemovalReason = "revoked" | "expired";

export interface NewClient {
  name: string;
  ttlMs: number;
  rules: Rule[];
  credentials: string[];
}

export class NameTaken extends Error {}

interface RegistryEvents {
  removed: [name: string, reason: RemovalReason];
}

/**
 * The sandboxes registered at run time, as this process sees them: kept in memory for the
 * hot path (every CONNECT), written through to the store, and kept in step with the changes
 * other processes make there. A client that is revoked or expires emits "removed", on which
 * its open tunnels are closed.
 */
export class ClientRegistry extends EventEmitter<RegistryEvents> {
  private readonly byName = new Map<string, RegisteredClient>();
  private readonly byDigest = new Map<string, RegisteredClient>();
  private timer: NodeJS.Timeout | undefined;
  /** When the timer fires. */
  private timerAt = Number.POSITIVE_INFINITY;
  private closed = false;

  constructor(
    readonly store: ClientStore,
    scrubber: Scrubber,
    private readonly now: () => number = Date.now,
  ) {
    super();
    // Tokens are found by shape and digest: one linear pass per line however many clients
    // there are, and a replica scrubs tokens it never saw (it only knows their digests).
    scrubber.use((text) => (this.byDigest.size === 0 ? text : text.replace(TOKEN_SHAPED, (run) => (this.byDigest.has(tokenDigest(run)) ? REDACTED : run))));
  }

  /** Loads what the store holds and follows the changes made elsewhere. */
  async start(): Promise<void> {
    this.reset(await this.store.load());
    this.store.watch((change) => this.onStoreChange(change));
  }

  async create(request: NewClient): Promise<{ client: RegisteredClient; token: string }> {
    const token = newToken();
    const now = this.now();
    const client: RegisteredClient = {
      name: request.name,
      token_sha256: tokenDigest(token),
      rules: request.rules,
      credentials: request.credentials,
      created_at: new Date(now).toISOString(),
      expires_at: new Date(now + request.ttlMs).toISOString(),
    };
    if (!(await this.store.create(client))) throw new NameTaken(`a client named "${request.name}" is already registered`);
    this.apply(client);
    return { client, token };
  }

  /** false when no such client was registered. */
  async revoke(name: string): Promise<boolean> {
    const removed = await this.store.remove(name);
    const known = this.byName.has(name);
    this.drop(name, "revoked");
    return removed || known;
  }

  list(): RegisteredClient[] {
    const now = this.now();
    return [...this.byName.values()].filter((client) => expiresAtMs(client) > now);
  }

  get(name: string): RegisteredClient | undefined {
    const client = this.byName.get(name);
    return client && expiresAtMs(client) > this.now() ? client : undefined;
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  /** The client's own rules, or undefined when it is not a registered client. */
  rulesOf(name: string): readonly Rule[] | undefined {
    return this.byName.get(name)?.rules;
  }

  credentialsOf(name: string): readonly string[] | undefined {
    return this.byName.get(name)?.credentials;
  }

  /** Basic name:token. undefined when no registered client has that name. */
  checkBasic(name: string, token: string): boolean | undefined {
    const client = this.byName.get(name);
    if (!client) return undefined;
    // Equal-length digests compared in constant time.
    const ok = timingSafeEqual(Buffer.from(tokenDigest(token), "hex"), Buffer.from(client.token_sha256, "hex")) && this.usable(client);
    return ok;
  }

  /** Bearer token: the client it belongs to, if any. */
  checkBearer(token: string): string | undefined {
    // A lookup by the digest of a 256-bit random token: its timing says nothing useful about the token.
    const client = this.byDigest.get(tokenDigest(token));
    if (!client || !this.usable(client)) return undefined;
    return client.name;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.store.close();
  }

  private usable(client: RegisteredClient): boolean {
    // A store that cannot tell us about revocations made elsewhere makes every registered client suspect.
    return expiresAtMs(client) > this.now() && (this.store.healthy?.() ?? true);
  }

  private onStoreChange(change: StoreChange): void {
    if (change.type === "created") this.apply(change.client);
    else if (change.type === "removed") this.drop(change.name, "revoked");
    else this.reset(change.clients);
  }

  private reset(clients: RegisteredClient[]): void {
    const names = new Set(clients.map((client) => client.name));
    for (const name of [...this.byName.keys()]) if (!names.has(name)) this.drop(name, "revoked");
    for (const client of clients) this.apply(client);
  }

  private apply(client: RegisteredClient): void {
    const previous = this.byName.get(client.name);
    if (previous?.token_sha256 === client.token_sha256 && previous.expires_at === client.expires_at) return;
    if (previous) this.byDigest.delete(previous.token_sha256);
    this.byName.set(client.name, client);
    this.byDigest.set(client.token_sha256, client);
    const at = expiresAtMs(client);
    if (at <= this.now()) this.expire();
    else if (at < this.timerAt) this.schedule(at);
  }

  private drop(name: string, reason: RemovalReason): void {
    const client = this.byName.get(name);
    if (!client) return;
    this.byName.delete(name);
    this.byDigest.delete(client.token_sha256);
    this.emit("removed", name, reason);
  }

  private expire(): void {
    const now = this.now();
    for (const client of [...this.byName.values()]) if (expiresAtMs(client) <= now) this.drop(client.name, "expired");
    this.armTimer();
  }

  /** One timer, for the next expiry. */
  private armTimer(): void {
    let next = Number.POSITIVE_INFINITY;
    for (const client of this.byName.values()) next = Math.min(next, expiresAtMs(client));
    this.schedule(next);
  }

  private schedule(at: number): void {
    clearTimeout(this.timer);
    this.timerAt = at;
    if (this.closed || at === Number.POSITIVE_INFINITY) return;
    this.timer = setTimeout(() => this.expire(), Math.min(Math.max(0, at - this.now()), MAX_TIMER_MS));
    this.timer.unref();
  }
}
