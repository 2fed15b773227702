import { z } from "zod";
import { duration } from "./duration-schema.js";


/** Token endpoints are reached over verified TLS only: a minted secret never crosses the network in cleartext. */
const httpsUrl = z
  .string()
  .refine((text) => URL.canParse(text) && new URL(text).protocol === "https:", { message: 'expected an https:// URL, e.g. "https://api.github.com"' })
  .refine((text) => !URL.canParse(text) || (new URL(text).username === "" && new URL(text).password === ""), {
    message: "a URL must not carry credentials: give them as secret sources",
  });

const numericId = z
  .union([z.number().int().positive(), z.string().regex(/^\d+$/, "expected a number")])
  .transform((value) => String(value));

const PLAIN_KINDS = ["env", "file", "command"] as const;
const PART_KINDS = [...PLAIN_KINDS, "secret"] as const;

/** The plain kinds, read afresh each time: an environment variable, a file, a command's output. */
const plainKindFields = {
  env: z.string().min(1).optional(),
  file: z.string().min(1).optional(),
  command: z.string().min(1).optional(),
};

const secretName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, "expected the name of a secret under secrets");

function exactlyOne(kinds: readonly string[]) {
  return (source: Record<string, unknown>, ctx: z.RefinementCtx) => {
    const given = kinds.filter((kind) => source[kind] !== undefined);
    if (given.length !== 1) {
      const list = `${kinds.slice(0, -1).join(", ")} or ${kinds[kinds.length - 1]}`;
      ctx.addIssue({ code: "custom", message: `expected exactly one of ${list}${given.length ? ` (got ${given.join(", ")})` : ""}` });
    }
  };
}

/**
 * A value a minted source needs (a private key, a client secret, a Vault token): read afresh
 * each time it mints, or `secret: NAME`, another named secret (a client secret kept in Vault).
 */
export const plainSecretSource = z
  .strictObject({ ...plainKindFields, secret: secretName.optional() })
  .superRefine(exactlyOne(PART_KINDS));

/** A GitHub App installation token: an RS256 JWT exchanged at POST {api}/app/installations/{id}/access_tokens. */
export const githubAppSource = z.strictObject({
  app_id: numericId,
  installation_id: numericId,
  private_key: plainSecretSource,
  api: httpsUrl.default("https://api.github.com"),
  repositories: z.array(z.string().regex(/^[A-Za-z0-9_.-]+$/, "expected a repository name without its owner")).min(1).optional(),
  permissions: z.record(z.string().regex(/^[a-z_]+$/, "expected a permission name like contents"), z.enum(["read", "write", "admin"])).optional(),
});

/** An OAuth 2.0 token endpoint: client_credentials (RFC 6749 section 4.4) or refresh_token (section 6). */
export const oauth2Source = z
  .strictObject({
    token_url: httpsUrl,
    grant: z.enum(["client_credentials", "refresh_token"]).default("client_credentials"),
    client_id: plainSecretSource,
    client_secret: plainSecretSource.optional(),
    refresh_token: plainSecretSource.optional(),
    /** basic: HTTP Basic (RFC 6749 section 2.3.1); body: client_id and client_secret in the form body */
    client_auth: z.enum(["basic", "body"]).default("basic"),
    scope: z.string().min(1).optional(),
  })
  .superRefine((source, ctx) => {
    if (source.grant === "client_credentials" && !source.client_secret) {
      ctx.addIssue({ code: "custom", path: ["client_secret"], message: "the client_credentials grant needs a client_secret" });
    }
    if (source.grant === "refresh_token" && !source.refresh_token) {
      ctx.addIssue({ code: "custom", path: ["refresh_token"], message: "the refresh_token grant needs a refresh_token" });
    }
    if (source.grant === "client_credentials" && source.refresh_token) {
      ctx.addIssue({ code: "custom", path: ["refresh_token"], message: 'a refresh_token is only used with grant: refresh_token' });
    }
  });

/** A HashiCorp Vault KV version 2 secret: GET {address}/v1/{path}, one field of data.data. */
export const vaultSource = z.strictObject({
  address: httpsUrl,
  path: z
    .string()
    .regex(/^[A-Za-z0-9_.\-/]+$/, 'expected a path like "secret/data/openai"')
    .refine((path) => !path.startsWith("/") && !path.split("/").includes(".."), { message: 'expected a path like "secret/data/openai" (no leading "/", no "..")' }),
  field: z.string().min(1),
  token: plainSecretSource,
  /** Vault Enterprise / HCP namespace, sent as X-Vault-Namespace */
  namespace: z.string().min(1).optional(),
});

const SOURCE_KINDS = [...PLAIN_KINDS, "github_app", "oauth2", "vault"] as const;

/** Where a named secret's value comes from: exactly one of env, file, command, github_app, oauth2, vault. */
export const secretSource = z
  .strictObject({
    ...plainKindFields,
    github_app: githubAppSource.optional(),
    oauth2: oauth2Source.optional(),
    vault: vaultSource.optional(),
    /** how long a value is used before it is read again; for minted kinds, at most this long */
    ttl: duration.optional(),
  })
  .superRefine(exactlyOne(SOURCE_KINDS));

export type SecretSource = z.output<typeof secretSource>;
export type PlainSecretSource = z.output<typeof plainSecretSource>;
export type GithubAppSource = z.output<typeof githubAppSource>;
export type OAuth2Source = z.output<typeof oauth2Source>;
export type VaultSource = z.output<typeof vaultSource>;

/** The named secrets a source's parts refer to (`secret: NAME`), with where each is written. */
export function partReferences(source: SecretSource): { part: string[]; secret: string }[] {
  const parts: [string[], PlainSecretSource | undefined][] = [
    [["github_app", "private_key"], source.github_app?.private_key],
    [["oauth2", "client_id"], source.oauth2?.client_id],
    [["oauth2", "client_secret"], source.oauth2?.client_secret],
    [["oauth2", "refresh_token"], source.oauth2?.refresh_token],
    [["vault", "token"], source.vault?.token],
  ];
  return parts.flatMap(([part, value]) => (value?.secret !== undefined ? [{ part: [...part, "secret"], secret: value.secret }] : []));
}
