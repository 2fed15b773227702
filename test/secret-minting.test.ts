import { generateKeyPairSync } from "node:crypto";
import { readFileSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SecretStore, SecretUnavailable, type SecretStoreOptions } from "../src/credentials/secrets.js";
import { TokenFetch } from "../src/credentials/token-fetch.js";
import { Scrubber } from "../src/log/scrub.js";
import { DestinationGuard } from "../src/policy/destinations.js";
import { parsePolicy, PolicyInvalidError } from "../src/policy/load.js";
import { secretSource, type SecretSource } from "../src/policy/secret-source-schema.js";
import { createLookup } from "../src/transport/upstream/lookup.js";
import { buildUpstreamTrust } from "../src/transport/upstream/trust.js";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { startFakeGitHub, startFakeOAuth, startFakeVault, type FakeGitHub, type FakeOAuth, type FakeVault } from "./helpers/token-services.js";

/** One clock for portcullis and the fakes, so token lifetimes pass without waiting. */
let offsetMs = 0;
const now = () => Date.now() + offsetMs;
const MINUTE = 60_000;

let pki: ServerPki;
let otherPki: ServerPki;
let dir: string;
let keyFile: string;
let github: FakeGitHub;
let oauthBasic: FakeOAuth;
let oauthBody: FakeOAuth;
let vault: FakeVault;
let untrusted: FakeVault;
let fetcher: TokenFetch;
const CLIENT_SECRET = "s3cr:et/+ &=%é-mint";

function store(sources: Record<string, unknown>, options: SecretStoreOptions = {}): { store: SecretStore; scrubber: Scrubber; warnings: string[] } {
  const scrubber = new Scrubber();
  const warnings: string[] = [];
  const parsed = Object.fromEntries(Object.entries(sources).map(([name, source]) => [name, secretSource.parse(source) as SecretSource]));
  return { store: new SecretStore(parsed, scrubber, { fetcher, now, warn: (_, message) => warnings.push(message), ...options }), scrubber, warnings };
}

const at = (name: string, port: number) => `https://${name}:${port}`;

beforeAll(async () => {
  pki = await makeUpstreamPki("tokens");
  otherPki = await makeUpstreamPki("unknown-ca");
  dir = tempDir("minting");
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  keyFile = join(dir, "app.pem");
  writeFileSync(keyFile, privateKey.export({ type: "pkcs1", format: "pem" }));
  github = await startFakeGitHub(pki, { appId: "12345", publicKey, prefix: "", expectBody: { repositories: ["repo-a"], permissions: { contents: "read" } }, now });
  oauthBasic = await startFakeOAuth(pki, { clientId: "portcullis-ci", clientSecret: CLIENT_SECRET, auth: "basic", scope: "read write" });
  oauthBody = await startFakeOAuth(pki, { clientId: "portcullis-ci", clientSecret: CLIENT_SECRET, auth: "body", refreshToken: "rt_initial_0001" });
  vault = await startFakeVault(pki, { path: "secret/data/openai", token: "hvs.vault-token-one", data: { api_key: "sk-from-vault-0001", count: 3, nested: { a: 1 } } });
  untrusted = await startFakeVault(otherPki, { path: "secret/data/openai", token: "hvs.vault-token-one", data: { api_key: "sk-never" } });
  const names = ["github.test", "oauth.test", "vault.test", "untrusted.test"];
  fetcher = new TokenFetch({
    trust: buildUpstreamTrust([pki.caFile]),
    lookup: createLookup(Object.fromEntries(names.map((name) => [name, "127.0.0.1"])), new DestinationGuard("deny", ["127.0.0.1/32"])),
    connectMs: 2000,
    responseMs: 5000,
  });
  process.env.PCX_MINT_CID = "portcullis-ci";
  process.env.PCX_MINT_SECRET = CLIENT_SECRET;
});

afterAll(async () => {
  await fetcher?.close();
  await Promise.all([github, oauthBasic, oauthBody, vault, untrusted].map((fake) => fake?.close()));
});

const githubSource = (installation = 678) => ({
  github_app: { app_id: 12345, installation_id: installation, private_key: { file: keyFile }, api: at("github.test", github.upstream.port), repositories: ["repo-a"], permissions: { contents: "read" } },
});

describe("github_app", () => {
  it("mints once for 20 concurrent requests, with a JWT GitHub accepts, and again only when the token is 5 minutes from expiry", async () => {
    offsetMs = 0;
    const { store: secrets, scrubber } = store({ gh: githubSource() });
    const values = await Promise.all(Array.from({ length: 20 }, () => secrets.resolve("gh")));
    expect(github.refusals).toEqual([]);
    expect(github.mints.get("678")).toBe(1);
    expect(new Set(values).size).toBe(1);
    expect(values[0]).toMatch(/^ghs_/);
    // The token and the JWT that minted it are scrubbed.
    for (const issued of github.issued) expect(scrubber.scrub(`x ${issued} y`)).toBe("x [REDACTED] y");

    offsetMs = 30 * MINUTE;
    expect(await secrets.resolve("gh")).toBe(values[0]);
    expect(github.mints.get("678")).toBe(1);

    offsetMs = 55 * MINUTE + 1000; // expires_at is 60 minutes out; the token is replaced 5 minutes before
    const next = await secrets.resolve("gh");
    expect(next).not.toBe(values[0]);
    expect(github.mints.get("678")).toBe(2);
  });

  it("keeps the last good token through a failed background refresh, fails closed once it expires, and recovers", async () => {
    offsetMs = 0;
    const { store: secrets, warnings } = store({ gh: githubSource(700) });
    const first = await secrets.resolve("gh");
    github.fail = 500;
    try {
      offsetMs = 50 * MINUTE; // past 80% of the token's 55 minutes: refreshed in the background
      expect(await secrets.resolve("gh")).toBe(first);
      await expect.poll(() => warnings.length, { timeout: 10_000 }).toBeGreaterThan(0);
      expect(warnings[0]).toMatch(/github_app installation 700: .*answered HTTP 500; the last good value is used until it expires/);
      expect(await secrets.resolve("gh")).toBe(first);

      offsetMs = 55 * MINUTE + 1000;
      const error = (await secrets.resolve("gh").catch((e: unknown) => e)) as SecretUnavailable;
      expect(error).toBeInstanceOf(SecretUnavailable);
      expect(error.message).toMatch(/^secret "gh" is unavailable: github_app installation 700: https:\/\/github\.test:\d+\/app\/installations\/700\/access_tokens answered HTTP 500$/);
      expect(error.message).not.toContain("ghs_should_never_be_logged");
    } finally {
      github.fail = undefined;
    }
    const recovered = await secrets.resolve("gh");
    expect(recovered).not.toBe(first);
    expect(github.mints.get("700")).toBe(2);
  });

  it("names a private key that is missing or not a key, never its content", async () => {
    const notAKey = join(dir, "not-a-key.pem");
    writeFileSync(notAKey, "-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5LXNlY3JldA==\n-----END PRIVATE KEY-----\n");
    const { store: secrets } = store({
      missing: { github_app: { ...githubSource().github_app, private_key: { file: join(dir, "absent.pem") } } },
      bad: { github_app: { ...githubSource().github_app, private_key: { file: notAKey } } },
    });
    await expect(secrets.resolve("missing")).rejects.toThrow(/github_app installation 678: private_key \(file .*absent\.pem\): cannot read .*\(ENOENT\)/);
    const error = (await secrets.resolve("bad").catch((e: unknown) => e)) as Error;
    expect(error.message).toMatch(/private_key is not a PEM private key/);
    expect(error.message).not.toContain("bm90");
  });
});

describe("oauth2", () => {
  const basicSource = () => ({
    oauth2: { token_url: `${at("oauth.test", oauthBasic.upstream.port)}/oauth/token`, client_id: { env: "PCX_MINT_CID" }, client_secret: { env: "PCX_MINT_SECRET" }, scope: "read write" },
  });

  it("client_credentials with HTTP Basic (id and secret form-encoded before base64): one mint shared, expires_in honoured", async () => {
    offsetMs = 0;
    oauthBasic.expiresIn = 120;
    const { store: secrets, scrubber } = store({ svc: basicSource() });
    const values = await Promise.all(Array.from({ length: 20 }, () => secrets.resolve("svc")));
    expect(oauthBasic.refusals).toEqual([]);
    expect(oauthBasic.mints).toBe(1);
    expect(oauthBasic.grants).toEqual(["client_credentials"]);
    expect(new Set(values).size).toBe(1);
    expect(scrubber.scrub(`a ${values[0]} ${CLIENT_SECRET} b`)).toBe("a [REDACTED] [REDACTED] b");

    offsetMs = 60_000;
    expect(await secrets.resolve("svc")).toBe(values[0]);
    expect(oauthBasic.mints).toBe(1);
    offsetMs = 120_000; // expires_in passed (less a tenth of it as margin)
    expect(await secrets.resolve("svc")).not.toBe(values[0]);
    expect(oauthBasic.mints).toBe(2);
  });

  it("without expires_in asks again after the 5 minute default", async () => {
    offsetMs = 0;
    oauthBasic.expiresIn = undefined;
    const before = oauthBasic.mints;
    const { store: secrets } = store({ svc: basicSource() });
    const first = await secrets.resolve("svc");
    offsetMs = 3 * MINUTE;
    expect(await secrets.resolve("svc")).toBe(first);
    offsetMs = 5 * MINUTE + 1;
    expect(await secrets.resolve("svc")).not.toBe(first);
    expect(oauthBasic.mints).toBe(before + 2);
    oauthBasic.expiresIn = 3600;
  });

  it("client authentication the endpoint does not expect is refused with the error code only", async () => {
    const { store: secrets } = store({ svc: { oauth2: { ...basicSource().oauth2, client_auth: "body" } } });
    const error = (await secrets.resolve("svc").catch((e: unknown) => e)) as Error;
    expect(error.message).toMatch(/oauth2 oauth\.test:\d+\/oauth\/token: https:\/\/oauth\.test:\d+\/oauth\/token answered HTTP 401 \(invalid_client\)$/);
    expect(error.message).not.toContain("rt_never_logged");
    expect(error.message).not.toContain(CLIENT_SECRET);
  });

  it("refresh_token grant with body authentication: the rotated refresh token is used next and written back to its file atomically", async () => {
    offsetMs = 0;
    oauthBody.expiresIn = 600;
    const rtFile = join(dir, "refresh-token");
    writeFileSync(rtFile, "rt_initial_0001\n");
    chmodSync(rtFile, 0o640);
    const source = {
      oauth2: {
        token_url: `${at("oauth.test", oauthBody.upstream.port)}/oauth/token`,
        grant: "refresh_token",
        client_auth: "body",
        client_id: { env: "PCX_MINT_CID" },
        client_secret: { env: "PCX_MINT_SECRET" },
        refresh_token: { file: rtFile },
      },
    };
    const { store: secrets, scrubber } = store({ svc: source });
    const first = await secrets.resolve("svc");
    expect(oauthBody.refusals).toEqual([]);
    const rotated = oauthBody.validRefreshToken;
    expect(rotated).not.toBe("rt_initial_0001");
    expect(readFileSync(rtFile, "utf8")).toBe(`${rotated}\n`);
    expect(statSync(rtFile).mode & 0o777).toBe(0o640);
    expect(scrubber.scrub(`${rotated} rt_initial_0001`)).toBe("[REDACTED] [REDACTED]");

    offsetMs = 10 * MINUTE;
    const second = await secrets.resolve("svc");
    expect(oauthBody.refusals).toEqual([]);
    expect(second).not.toBe(first);
    expect(oauthBody.grants).toEqual(["refresh_token", "refresh_token"]);
    expect(readFileSync(rtFile, "utf8")).toBe(`${oauthBody.validRefreshToken}\n`);

    // A restart (a new store) starts from the file, so it does not go back to a spent token.
    offsetMs = 0;
    const { store: restarted } = store({ svc: source });
    await restarted.resolve("svc");
    expect(oauthBody.refusals).toEqual([]);
  });

  it("a refresh token from the environment is rotated in memory, with a warning that it cannot be written back", async () => {
    offsetMs = 0;
    process.env.PCX_MINT_RT = oauthBody.validRefreshToken;
    const source = {
      oauth2: {
        token_url: `${at("oauth.test", oauthBody.upstream.port)}/oauth/token`,
        grant: "refresh_token",
        client_auth: "body",
        client_id: { env: "PCX_MINT_CID" },
        client_secret: { env: "PCX_MINT_SECRET" },
        refresh_token: { env: "PCX_MINT_RT" },
      },
    };
    const { store: secrets, warnings } = store({ svc: source });
    await secrets.resolve("svc");
    offsetMs = 10 * MINUTE;
    await secrets.resolve("svc");
    expect(oauthBody.refusals).toEqual([]);
    expect(warnings.some((warning) => /kept in memory only: its source \(env PCX_MINT_RT\)/.test(warning))).toBe(true);
    // A policy reload builds a new store: it goes on with the rotated token, not the spent one in the environment.
    const { store: reloaded } = store({ svc: source });
    await reloaded.resolve("svc");
    expect(oauthBody.refusals).toEqual([]);
  });
});

describe("vault", () => {
  const vaultSource = (extra: Record<string, unknown> = {}, tokenFile = join(dir, "vault-token")) => ({
    vault: { address: at("vault.test", vault.upstream.port), path: "secret/data/openai", field: "api_key", token: { file: tokenFile }, ...extra },
  });

  it("reads one field of a KV v2 secret with X-Vault-Token; lease_duration honoured; a rotated token file used at the next read", async () => {
    offsetMs = 0;
    const tokenFile = join(dir, "vault-token");
    writeFileSync(tokenFile, "hvs.vault-token-one\n");
    vault.leaseDuration = 30;
    const { store: secrets, scrubber } = store({ openai: vaultSource() });
    const values = await Promise.all(Array.from({ length: 20 }, () => secrets.resolve("openai")));
    expect(vault.refusals).toEqual([]);
    expect(vault.reads).toBe(1);
    expect(new Set(values)).toEqual(new Set(["sk-from-vault-0001"]));
    expect(scrubber.scrub("hvs.vault-token-one sk-from-vault-0001")).toBe("[REDACTED] [REDACTED]");

    vault.token = "hvs.vault-token-two";
    writeFileSync(tokenFile, "hvs.vault-token-two\n");
    vault.data = { api_key: "sk-from-vault-0002" };
    offsetMs = 31_000;
    expect(await secrets.resolve("openai")).toBe("sk-from-vault-0002");
    expect(vault.refusals).toEqual([]);
    expect(vault.reads).toBe(2);
  });

  it("without a lease, uses the default ttl, or the policy's ttl", async () => {
    offsetMs = 0;
    vault.leaseDuration = 0;
    const before = vault.reads;
    const { store: secrets } = store({ plain: vaultSource(), short: { ...vaultSource(), ttl: "10s" } });
    await secrets.resolve("plain");
    await secrets.resolve("short");
    offsetMs = 11_000;
    await secrets.resolve("plain");
    await secrets.resolve("short");
    expect(vault.reads).toBe(before + 3);
    offsetMs = 5 * MINUTE + 1;
    await secrets.resolve("plain");
    expect(vault.reads).toBe(before + 4);
  });

  it("sends X-Vault-Namespace when a namespace is given", async () => {
    vault.namespace = "team-a";
    try {
      const { store: secrets } = store({ without: vaultSource(), with: vaultSource({ namespace: "team-a" }) });
      await expect(secrets.resolve("without")).rejects.toThrow(/answered HTTP 403$/);
      expect(await secrets.resolve("with")).toBe(vault.data.api_key);
    } finally {
      vault.namespace = undefined;
    }
  });

  it("fails closed with clear messages: wrong token, missing field, not a string, untrusted TLS, a denied destination", async () => {
    const wrongToken = join(dir, "wrong-token");
    writeFileSync(wrongToken, "hvs.wrong-token-zzz");
    vault.data = { api_key: "sk-from-vault-0002", nested: { a: 1 } };
    const { store: secrets } = store({
      wrong: vaultSource({}, wrongToken),
      field: vaultSource({ field: "nope" }),
      nested: vaultSource({ field: "nested" }),
      untrusted: { vault: { ...vaultSource().vault, address: at("untrusted.test", untrusted.upstream.port) } },
      denied: { vault: { ...vaultSource().vault, address: "https://10.255.255.1:8200" } },
    });
    await expect(secrets.resolve("wrong")).rejects.toThrow(/^secret "wrong" is unavailable: vault secret\/data\/openai: https:\/\/vault\.test:\d+\/v1\/secret\/data\/openai answered HTTP 403$/);
    await expect(secrets.resolve("field")).rejects.toThrow(/the secret has no field "nope"/);
    await expect(secrets.resolve("nested")).rejects.toThrow(/field "nested" is not a string/);
    await expect(secrets.resolve("untrusted")).rejects.toThrow(/cannot reach https:\/\/untrusted\.test:\d+\/v1\/secret\/data\/openai \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT)\)/);
    expect(untrusted.reads).toBe(0);
    await expect(secrets.resolve("denied")).rejects.toThrow(/cannot reach https:\/\/10\.255\.255\.1:8200\/v1\/secret\/data\/openai \(.*10\.255\.255\.1.*\)/);
  });
});

describe("a part given as another named secret", () => {
  it("an OAuth client secret kept in Vault: fetched from Vault, then used to mint", async () => {
    offsetMs = 0;
    const tokenFile = join(dir, "vault-token-for-chain");
    writeFileSync(tokenFile, vault.token);
    vault.data = { ...vault.data, client_secret: CLIENT_SECRET };
    const before = { reads: vault.reads, mints: oauthBasic.mints, refused: oauthBasic.refusals.length };
    const { store: secrets } = store({
      cs: { vault: { address: at("vault.test", vault.upstream.port), path: "secret/data/openai", field: "client_secret", token: { file: tokenFile } } },
      svc: { oauth2: { token_url: `${at("oauth.test", oauthBasic.upstream.port)}/oauth/token`, client_id: { env: "PCX_MINT_CID" }, client_secret: { secret: "cs" }, scope: "read write" } },
    });
    const values = await Promise.all(Array.from({ length: 5 }, () => secrets.resolve("svc")));
    expect(new Set(values).size).toBe(1);
    expect(oauthBasic.refusals.length).toBe(before.refused);
    expect({ reads: vault.reads, mints: oauthBasic.mints }).toEqual({ reads: before.reads + 1, mints: before.mints + 1 });
  });

  it("must name a defined secret, must not form a cycle, and cannot be a client token", () => {
    const errors = (yaml: string) => {
      try {
        parsePolicy(`version: 1\n${yaml}`, "p.yaml");
        return [];
      } catch (error) {
        if (error instanceof PolicyInvalidError) return error.errors.map((e) => e.message);
        throw error;
      }
    };
    const vaultWith = (token: string) => `{ vault: { address: "https://v.test", path: secret/data/x, field: f, token: ${token} } }`;
    expect(errors(`secrets:\n  a: ${vaultWith("{ secret: ghost }")}\n`)).toEqual([expect.stringMatching(/secrets\.a\.vault\.token\.secret: secret "ghost" is not defined under secrets/)]);
    expect(errors(`secrets:\n  a: ${vaultWith("{ secret: b }")}\n  b: ${vaultWith("{ secret: a }")}\n  c: ${vaultWith("{ secret: c }")}\n`)).toEqual([
      expect.stringMatching(/secrets\.a: secrets refer to each other in a cycle: a -> b -> a/),
      expect.stringMatching(/secrets\.c: secrets refer to each other in a cycle: c -> c/),
    ]);
    expect(errors(`secrets:\n  v: { env: V }\nclients:\n  - { name: a1, token: ${vaultWith("{ secret: v }")} }\n`)).toEqual([expect.stringMatching(/clients\.0\.token\.vault\.token\.secret: a client token cannot refer to a named secret/)]);
  });
});

describe("secret source validation", () => {
  const errors = (source: unknown) => {
    const result = secretSource.safeParse(source);
    return result.success ? [] : result.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`);
  };

  it("explains what is wrong", () => {
    expect(errors({ github_app: { app_id: 1, installation_id: 2, private_key: { file: "k" } }, env: "X" })).toEqual([expect.stringMatching(/exactly one of env, file, command, github_app, oauth2 or vault \(got env, github_app\)/)]);
    expect(errors({ github_app: { app_id: 1, installation_id: 2, private_key: { file: "k" }, api: "http://api.github.com" } })).toEqual([expect.stringMatching(/^github_app\.api: expected an https:\/\/ URL/)]);
    expect(errors({ github_app: { app_id: 1, installation_id: 2, private_key: { file: "k", env: "K" } } })).toEqual([expect.stringMatching(/^github_app\.private_key: expected exactly one of env, file, command or secret \(got env, file\)/)]);
    expect(errors({ oauth2: { token_url: "https://a.test/t", client_id: { env: "A" } } })).toEqual([expect.stringMatching(/^oauth2\.client_secret: the client_credentials grant needs a client_secret/)]);
    expect(errors({ oauth2: { token_url: "https://a.test/t", grant: "refresh_token", client_id: { env: "A" } } })).toEqual([expect.stringMatching(/^oauth2\.refresh_token: the refresh_token grant needs a refresh_token/)]);
    expect(errors({ oauth2: { token_url: "https://u:p@a.test/t", client_id: { env: "A" }, client_secret: { env: "B" } } })).toEqual([expect.stringMatching(/must not carry credentials/)]);
    expect(errors({ vault: { address: "https://v.test", path: "/secret/../x", field: "f", token: { env: "T" } } })).toEqual([expect.stringMatching(/^vault\.path: /)]);
    expect(errors({ vault: { address: "https://v.test", path: "secret/data/x", field: "f", token: { env: "T", ttl: "5m" } } })).toEqual([expect.stringMatching(/^vault\.token: unknown key "ttl"|Unrecognized key/)]);
  });
});
