import type { Scrubber } from "../log/scrub.js";
import type { SecretSource } from "../policy/schema.js";
import { SecretUnavailable } from "./secret-unavailable.js";
import { createSourceReader } from "./sources/index.js";
import type { SecretSourceReader, SourceContext } from "./sources/source.js";
import type { TokenFetch } from "./token-fetch.js";

export { SecretUnavailable };

/** A refresh starts this far into a value's life, so requests rarely wait for one. */
const REFRESH_AT = 0.8;

/** Values a secret had before its current one, kept for echo scrubbing (a rotated token stays valid a while). */
const EARLIER_VALUES = 4;

interface Cached {
  value: string;
  resolvedAt: number;
  expiresAt: number;
}

export interface SecretStoreOptions {
  /** How minted and fetched sources reach their endpoints; without it they are unavailable. */
  fetcher?: TokenFetch;
  /** Warnings that do not fail a request: a background refresh that failed, a rotated token not written back. */
  warn?: (secret: string, message: string) => void;
  now?: () => number;
}

/**
 * Named secrets, resolved on demand and cached for their ttl (or until the source says they
 * expire). Concurrent resolutions of one secret share one read or mint; a value is refreshed
 * in the background before it expires; a failed refresh keeps serving the last good value
 * until it expires. Every value is handed to the scrubber the moment it is known.
 */
export class SecretStore {
  private readonly cache = new Map<string, Cached>();
  private readonly inFlight = new Map<string, Promise<string>>();
  private readonly readers = new Map<string, SecretSourceReader>();
  /** The values each secret had before its current one, newest first. */
  private readonly earlier = new Map<string, string[]>();
  private readonly now: () => number;

  constructor(
    private readonly sources: Readonly<Record<string, SecretSource>>,
    private readonly scrubber: Scrubber,
    private readonly options: SecretStoreOptions = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  names(): string[] {
    return Object.keys(this.sources);
  }

  describe(name: string): string {
    return this.sources[name] ? this.reader(name).description : "undefined";
  }

  /**
   * The values resolved for a secret, without resolving it: the current one and the few before it
   * (a rotated token is still valid until it expires, and an upstream may have stored it); expired
   * ones too, for the same reason.
   */
  known(name: string): readonly string[] {
    const current = this.cache.get(name)?.value;
    const earlier = this.earlier.get(name) ?? [];
    return current === undefined ? earlier : [current, ...earlier];
  }

  /**
   * Takes what a store this one replaces (a reload) knew of the secrets both define, as values
   * before this store's own: a token it resolved is still valid, and may be echoed, after the reload.
   */
  rememberFrom(previous: SecretStore): void {
    for (const name of this.names()) {
      const values = previous.known(name);
      if (values.length) this.earlier.set(name, values.slice(0, EARLIER_VALUES));
    }
  }

  async resolve(name: string): Promise<string> {
    if (!this.sources[name]) throw new SecretUnavailable(name, "not defined in the policy");
    const cached = this.cache.get(name);
    const now = this.now();
    if (cached && now < cached.expiresAt) {
      if (now >= cached.resolvedAt + (cached.expiresAt - cached.resolvedAt) * REFRESH_AT && !this.inFlight.has(name)) {
        this.refresh(name).catch((error: Error) => this.options.warn?.(name, `${error.message}; the last good value is used until it expires`));
      }
      return cached.value;
    }
    return this.refresh(name);
  }

  private reader(name: string): SecretSourceReader {
    let reader = this.readers.get(name);
    if (!reader) {
      reader = createSourceReader(this.sources[name]!);
      this.readers.set(name, reader);
    }
    return reader;
  }

  private refresh(name: string): Promise<string> {
    let pending = this.inFlight.get(name);
    if (pending) return pending;
    const source = this.sources[name]!;
    const reader = this.reader(name);
    const context: SourceContext = {
      name,
      now: this.now,
      conceal: (value) => this.scrubber.add(value),
      warn: (message) => this.options.warn?.(name, `secret "${name}" (${reader.description}): ${message}`),
      fetcher: this.options.fetcher,
      resolveSecret: (other) => this.resolve(other),
    };
    pending = reader
      .read(context)
      .then(({ value, expiresAt }) => {
        this.scrubber.add(value);
        const resolvedAt = this.now();
        const ttl = source.ttl ?? reader.defaultTtlMs;
        // A source's own expiry wins; the policy's ttl can only make a value live shorter.
        const until = expiresAt === undefined ? resolvedAt + ttl : source.ttl === undefined ? expiresAt : Math.min(expiresAt, resolvedAt + source.ttl);
        const previous = this.cache.get(name)?.value;
        if (previous !== undefined && previous !== value) this.earlier.set(name, [previous, ...(this.earlier.get(name) ?? []).filter((old) => old !== value)].slice(0, EARLIER_VALUES));
        this.cache.set(name, { value, resolvedAt, expiresAt: until });
        return value;
      })
      .catch((error: Error) => {
        throw error instanceof SecretUnavailable ? error : new SecretUnavailable(name, error.message);
      })
      .finally(() => this.inFlight.delete(name));
    this.inFlight.set(name, pending);
    return pending;
  }

  /** Resolves every secret once (start-up and reload); returns the failures, which are warnings, not fatal. */
  async warmUp(): Promise<SecretUnavailable[]> {
    const results = await Promise.allSettled(this.names().map((name) => this.resolve(name)));
    return results.flatMap((result) => (result.status === "rejected" ? [result.reason as SecretUnavailable] : []));
  }
}
