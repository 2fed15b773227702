import type { TokenFetch } from "../token-fetch.js";

/** One value from a source; expiresAt (ms since the epoch) when the source says how long it lives. */
export interface SourceValue {
  value: string;
  expiresAt?: number;
}

/** What a source may use while it produces a value. */
export interface SourceContext {
  /** The secret's name, for messages. */
  readonly name: string;
  readonly now: () => number;
  /** Every secret-bearing string a source sees (a JWT, a client secret, a refresh token) is handed here to be scrubbed. */
  readonly conceal: (value: string) => void;
  /** Something the operator should know that does not stop the source (logged as a warning, scrubbed). */
  readonly warn: (message: string) => void;
  /** Another named secret of the same store (a part given as `secret: NAME`). */
  readonly resolveSecret: (name: string) => Promise<string>;
  /** Absent where nothing may be fetched (explain). */
  readonly fetcher: TokenFetch | undefined;
}

/** A kind of secret source: reads (or mints, or fetches) the current value. */
export interface SecretSourceReader {
  /** For messages: "env GITHUB_TOKEN", "vault secret/data/openai", never a value. */
  readonly description: string;
  /** How long a value lives when neither the source nor the policy says. */
  readonly defaultTtlMs: number;
  read(context: SourceContext): Promise<SourceValue>;
}

/** Thrown by a source; the store turns it into SecretUnavailable naming the secret. */
export class SourceFailed extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SourceFailed";
  }
}

export function requireFetcher(context: SourceContext, what: string): TokenFetch {
  if (!context.fetcher) throw new SourceFailed(`${what} cannot be reached from here`);
  return context.fetcher;
}
