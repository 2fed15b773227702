import type { OAuth2Source, PlainSecretSource } from "../../policy/secret-source-schema.js";
import { sendExpecting } from "./http-failure.js";
import { plainSource, readPart } from "./plain.js";
import { requireFetcher, SourceFailed, type SecretSourceReader, type SourceContext, type SourceValue } from "./source.js";
import { writeSecretFileAtomically } from "./write-back.js";

/** RFC 6749 section 5.1 makes expires_in optional; without it a token is asked for again after this long. */
const DEFAULT_LIFETIME_MS = 5 * 60_000;
/** A token is replaced this much before its expires_in runs out (at most a tenth of its life). */
const EXPIRY_MARGIN_MS = 60_000;

/** application/x-www-form-urlencoded, as RFC 6749 section 2.3.1 asks for the id and secret before base64. */
function formEncode(text: string): string {
  return new URLSearchParams({ v: text }).toString().slice(2);
}

export function basicClientAuth(clientId: string, clientSecret: string): string {
  return `Basic ${Buffer.from(`${formEncode(clientId)}:${formEncode(clientSecret)}`).toString("base64")}`;
}

/**
 * The refresh token in use. An authorization server may rotate it (RFC 6749 section 6): the
 * new one replaces the old in memory and, when it came from a file, in that file too, so a
 * restart does not go back to a spent token. A value the operator puts in the source later
 * (a fresh authorization) wins over the rotated one.
 */
class RefreshTokenKeeper {
  private fromSource: string | undefined;
  private rotated: string | undefined;

  constructor(
    private readonly what: string,
    private readonly source: PlainSecretSource,
  ) {}

  async current(context: SourceContext): Promise<string> {
    let read: string | undefined;
    try {
      read = await readPart(this.what, "refresh_token", this.source, context);
    } catch (error) {
      if (this.rotated === undefined) throw error;
    }
    if (read !== undefined && read !== this.fromSource && read !== this.rotated) {
      this.fromSource = read;
      this.rotated = undefined;
    }
    return this.rotated ?? read!;
  }

  /** Keeps a rotated token; a failure to write it back is a warning: the endpoint has already spent the old one. */
  async rotate(value: string, context: SourceContext): Promise<void> {
    if (value === this.rotated || (this.rotated === undefined && value === this.fromSource)) return;
    this.rotated = value;
    if (this.source.file === undefined) {
      context.warn(`the refresh_token was rotated and is kept in memory only: its source (${plainSource(this.source).description}) cannot be written back`);
      return;
    }
    try {
      await writeSecretFileAtomically(this.source.file, value);
      // The file now holds the rotated token; reading it back must not look like an operator's change.
      this.fromSource = value;
    } catch (error) {
      context.warn(`the rotated refresh_token could not be written back to ${this.source.file} (${(error as NodeJS.ErrnoException).code ?? "error"}); it is kept in memory`);
    }
  }
}

/**
 * One keeper per token endpoint and refresh token source for the whole process, so a policy
 * reload (a new store) goes on with the rotated token rather than the spent one it started with.
 */
const keepers = new Map<string, RefreshTokenKeeper>();

function keeperFor(what: string, tokenUrl: string, source: PlainSecretSource): RefreshTokenKeeper {
  const key = `${tokenUrl}\n${JSON.stringify(source)}`;
  let keeper = keepers.get(key);
  if (!keeper) {
    keeper = new RefreshTokenKeeper(what, source);
    keepers.set(key, keeper);
  }
  return keeper;
}

/** An OAuth 2.0 access token from a token endpoint: client_credentials (RFC 6749 section 4.4) or refresh_token (section 6). */
export function oauth2Source(source: OAuth2Source): SecretSourceReader {
  const url = new URL(source.token_url);
  const what = `oauth2 ${url.host}${url.pathname}`;
  const refreshToken = source.refresh_token ? keeperFor(what, source.token_url, source.refresh_token) : undefined;
  return {
    description: what,
    defaultTtlMs: DEFAULT_LIFETIME_MS,
    async read(context: SourceContext): Promise<SourceValue> {
      const fetcher = requireFetcher(context, what);
      const clientId = await readPart(what, "client_id", source.client_id, context, { secret: false });
      const clientSecret = source.client_secret ? await readPart(what, "client_secret", source.client_secret, context) : undefined;
      const form = new URLSearchParams({ grant_type: source.grant });
      if (refreshToken) form.set("refresh_token", await refreshToken.current(context));
      if (source.scope) form.set("scope", source.scope);
      const headers: Record<string, string> = {
        "content-type": "application/x-www-form-urlencoded",
        accept: "application/json",
        "user-agent": "portcullis",
      };
      if (source.client_auth === "basic" && clientSecret !== undefined) {
        headers.authorization = basicClientAuth(clientId, clientSecret);
      } else {
        // client_auth: body, or a public client (no secret) that identifies itself (RFC 6749 section 3.2.1).
        form.set("client_id", clientId);
        if (clientSecret !== undefined) form.set("client_secret", clientSecret);
      }
      const startedAt = context.now();
      const response = await sendExpecting(fetcher, what, { method: "POST", url, headers, body: form.toString() }, (status) => status === 200);
      const answer = response.json as { access_token?: unknown; expires_in?: unknown; refresh_token?: unknown };
      if (typeof answer.refresh_token === "string" && answer.refresh_token !== "") context.conceal(answer.refresh_token);
      if (typeof answer.access_token !== "string" || answer.access_token === "") throw new SourceFailed(`${what}: the answer has no access_token`);
      context.conceal(answer.access_token);
      if (refreshToken && typeof answer.refresh_token === "string" && answer.refresh_token !== "") await refreshToken.rotate(answer.refresh_token, context);
      const lifetimeMs = typeof answer.expires_in === "number" && answer.expires_in > 0 ? answer.expires_in * 1000 : typeof answer.expires_in === "string" && Number(answer.expires_in) > 0 ? Number(answer.expires_in) * 1000 : undefined;
      if (lifetimeMs === undefined) return { value: answer.access_token, expiresAt: undefined };
      return { value: answer.access_token, expiresAt: startedAt + lifetimeMs - Math.min(EXPIRY_MARGIN_MS, lifetimeMs / 10) };
    },
  };
}
