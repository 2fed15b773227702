import { createPrivateKey, sign, type KeyObject } from "node:crypto";
import type { GithubAppSource } from "../../policy/secret-source-schema.js";
import { joinUrl, sendExpecting } from "./http-failure.js";
import { readPart } from "./plain.js";
import { requireFetcher, SourceFailed, type SecretSourceReader, type SourceContext, type SourceValue } from "./source.js";

/** GitHub's documented clock-drift allowance: iat 60 s in the past; exp at most 10 minutes ahead. */
const IAT_BACKDATE_S = 60;
const JWT_LIFETIME_S = 9 * 60;
/** An installation token is replaced this long before GitHub's expires_at. */
const EXPIRY_MARGIN_MS = 5 * 60_000;
const API_VERSION = "2022-11-28";

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

/**
 * The app's JWT (RS256, RFC 7519), as GitHub's "Generating a JSON Web Token for a GitHub App"
 * describes. Signed on libuv's thread pool: an RSA signature would stall every tunnel for a
 * millisecond or more on the event loop.
 */
export async function appJwt(appId: string, key: KeyObject, nowMs: number): Promise<string> {
  const now = Math.floor(nowMs / 1000);
  const header = base64url(JSON.stringify({ alg: "RS256", typ: "JWT" }));
  const payload = base64url(JSON.stringify({ iat: now - IAT_BACKDATE_S, exp: now + JWT_LIFETIME_S, iss: appId }));
  const signature = await new Promise<Buffer>((resolve, reject) =>
    sign("sha256", Buffer.from(`${header}.${payload}`), key, (error, result) => (error ? reject(error) : resolve(result))),
  );
  return `${header}.${payload}.${base64url(signature)}`;
}

function loadKey(what: string, pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new SourceFailed(`${what}: private_key is not a PEM private key`);
  }
  if (key.asymmetricKeyType !== "rsa") throw new SourceFailed(`${what}: private_key is ${key.asymmetricKeyType ?? "not"} an RSA key; GitHub Apps sign with RS256`);
  return key;
}

/** A GitHub App installation token, minted with POST {api}/app/installations/{id}/access_tokens. */
export function githubAppSource(source: GithubAppSource): SecretSourceReader {
  const url = joinUrl(source.api, `app/installations/${source.installation_id}/access_tokens`);
  const what = `github_app installation ${source.installation_id}`;
  const body: Record<string, unknown> = {};
  if (source.repositories) body.repositories = source.repositories;
  if (source.permissions) body.permissions = source.permissions;
  return {
    description: what,
    defaultTtlMs: 55 * 60_000,
    async read(context: SourceContext): Promise<SourceValue> {
      const fetcher = requireFetcher(context, what);
      const key = loadKey(what, await readPart(what, "private_key", source.private_key, context));
      const jwt = await appJwt(source.app_id, key, context.now());
      context.conceal(jwt);
      const hasBody = Object.keys(body).length > 0;
      const response = await sendExpecting(
        fetcher,
        what,
        {
          method: "POST",
          url,
          headers: {
            accept: "application/vnd.github+json",
            "x-github-api-version": API_VERSION,
            "user-agent": "portcullis",
            authorization: `Bearer ${jwt}`,
            ...(hasBody ? { "content-type": "application/json" } : {}),
          },
          body: hasBody ? JSON.stringify(body) : undefined,
        },
        (status) => status === 201 || status === 200,
      );
      const answer = response.json as { token?: unknown; expires_at?: unknown };
      if (typeof answer.token !== "string" || answer.token === "") throw new SourceFailed(`${what}: the answer has no token`);
      context.conceal(answer.token);
      const expires = typeof answer.expires_at === "string" ? Date.parse(answer.expires_at) : Number.NaN;
      if (Number.isNaN(expires)) throw new SourceFailed(`${what}: the answer has no valid expires_at`);
      return { value: answer.token, expiresAt: expires - EXPIRY_MARGIN_MS };
    },
  };
}
