import { randomBytes, verify, type KeyObject } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { ServerPki } from "./pki.js";
import { startUpstream, type TestUpstream } from "./upstream.js";

/** Local stand-ins for GitHub, an OAuth 2.0 authorization server and Vault: each speaks the real protocol and checks what it receives. */

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

/** What a fake refused, so a test can show why a mint failed. */
export interface Refusals {
  refusals: string[];
}

export interface FakeGitHub extends Refusals {
  upstream: TestUpstream;
  /** Mints per installation id. */
  mints: Map<string, number>;
  /** Every JWT and token it saw or issued (none may show up in a log line). */
  issued: string[];
  /** The next answers: `fail` answers this status (with a body holding a secret-looking string) instead of minting. */
  fail: number | undefined;
  /** Installations whose mints answer this status instead. */
  failing: Map<string, number>;
  /** Lifetime of the tokens it issues, from its clock. */
  lifetimeMs: number;
  close(): Promise<void>;
}

interface GitHubOptions {
  appId: string;
  publicKey: KeyObject;
  /** The path prefix of the API (GitHub Enterprise Server serves it under /api/v3). */
  prefix: string;
  expectBody: unknown;
  now?: () => number;
}

/** POST {prefix}/app/installations/{id}/access_tokens, checking the app JWT (RS256, iss, iat, exp) with the app's public key. */
export async function startFakeGitHub(pki: ServerPki, options: GitHubOptions): Promise<FakeGitHub> {
  const now = options.now ?? Date.now;
  const fake: FakeGitHub = { upstream: undefined!, mints: new Map(), issued: [], refusals: [], fail: undefined, failing: new Map(), lifetimeMs: 3_600_000, close: () => fake.upstream.close() };
  const refuse = (res: ServerResponse, status: number, why: string) => {
    fake.refusals.push(why);
    json(res, status, { message: why, documentation_url: "https://docs.github.com/rest", leaked: "ghs_should_never_be_logged_0000" });
  };
  fake.upstream = await startUpstream(async (req, res) => {
    const body = await readBody(req);
    const match = new RegExp(`^${options.prefix}/app/installations/(\\d+)/access_tokens$`).exec(req.url ?? "");
    if (req.method !== "POST" || !match) return refuse(res, 404, `unexpected ${req.method} ${req.url}`);
    if (req.headers.accept !== "application/vnd.github+json") return refuse(res, 415, `accept ${req.headers.accept}`);
    if (!req.headers["x-github-api-version"]) return refuse(res, 400, "no X-GitHub-Api-Version");
    if (!req.headers["user-agent"]) return refuse(res, 403, "no User-Agent");
    const jwt = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    if (!jwt) return refuse(res, 401, "no bearer JWT");
    fake.issued.push(jwt);
    const [header, payload, signature] = jwt.split(".");
    if (!header || !payload || !signature) return refuse(res, 401, "malformed JWT");
    const head = JSON.parse(Buffer.from(header, "base64url").toString()) as { alg?: string };
    if (head.alg !== "RS256") return refuse(res, 401, `alg ${head.alg}`);
    if (!verify("sha256", Buffer.from(`${header}.${payload}`), options.publicKey, Buffer.from(signature, "base64url"))) return refuse(res, 401, "bad JWT signature");
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as { iss?: unknown; iat?: number; exp?: number };
    const seconds = Math.floor(now() / 1000);
    if (claims.iss !== options.appId) return refuse(res, 401, `iss ${JSON.stringify(claims.iss)}`);
    if (typeof claims.iat !== "number" || claims.iat > seconds - 50 || claims.iat < seconds - 70) return refuse(res, 401, `iat ${claims.iat} not back-dated 60 s from ${seconds}`);
    if (typeof claims.exp !== "number" || claims.exp <= seconds || claims.exp > seconds + 600 || claims.exp - claims.iat > 660) return refuse(res, 401, `exp ${claims.exp}`);
    if (JSON.stringify(JSON.parse(body || "{}")) !== JSON.stringify(options.expectBody)) return refuse(res, 422, `body ${body}`);
    if (body && req.headers["content-type"] !== "application/json") return refuse(res, 415, "body without content-type application/json");
    const id = match[1]!;
    const fail = fake.fail ?? fake.failing.get(id);
    if (fail !== undefined) return refuse(res, fail, "told to fail");
    fake.mints.set(id, (fake.mints.get(id) ?? 0) + 1);
    const token = `ghs_${randomBytes(18).toString("hex")}`;
    fake.issued.push(token);
    json(res, 201, { token, expires_at: new Date(now() + fake.lifetimeMs).toISOString(), permissions: { contents: "read" }, repository_selection: "selected" });
  }, pki);
  return fake;
}

export interface FakeOAuth extends Refusals {
  upstream: TestUpstream;
  mints: number;
  /** Every access and refresh token issued. */
  issued: string[];
  /** The refresh token it will accept next (rotated on every use). */
  validRefreshToken: string;
  /** expires_in of the tokens it issues; undefined: none sent. */
  expiresIn: number | undefined;
  /** Grants seen, in order. */
  grants: string[];
  fail: number | undefined;
  close(): Promise<void>;
}

interface OAuthOptions {
  clientId: string;
  clientSecret: string;
  auth: "basic" | "body";
  scope?: string;
  refreshToken?: string;
}

function formDecode(text: string): string {
  return new URLSearchParams(`v=${text}`).get("v") ?? "";
}

/** An RFC 6749 token endpoint: form body, grant, client authentication (RFC 6749 section 2.3.1), rotating refresh tokens (section 6). */
export async function startFakeOAuth(pki: ServerPki, options: OAuthOptions): Promise<FakeOAuth> {
  const fake: FakeOAuth = { upstream: undefined!, mints: 0, issued: [], validRefreshToken: options.refreshToken ?? "", expiresIn: 3600, grants: [], refusals: [], fail: undefined, close: () => fake.upstream.close() };
  const refuse = (res: ServerResponse, status: number, error: string, why: string) => {
    fake.refusals.push(why);
    json(res, status, { error, error_description: `${why} (secret-looking detail rt_never_logged_0000)` });
  };
  fake.upstream = await startUpstream(async (req, res) => {
    const body = await readBody(req);
    if (req.method !== "POST" || req.url !== "/oauth/token") return refuse(res, 404, "invalid_request", `unexpected ${req.method} ${req.url}`);
    if (req.headers["content-type"] !== "application/x-www-form-urlencoded") return refuse(res, 400, "invalid_request", `content-type ${req.headers["content-type"]}`);
    const form = new URLSearchParams(body);
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    // RFC 6749 section 2.3: a client MUST NOT use more than one authentication method per request.
    if (basic && form.has("client_secret")) return refuse(res, 400, "invalid_request", "two client authentication methods");
    let id: string | undefined;
    let secret: string | undefined;
    if (basic) {
      const decoded = Buffer.from(basic, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      id = formDecode(decoded.slice(0, colon));
      secret = formDecode(decoded.slice(colon + 1));
    } else {
      id = form.get("client_id") ?? undefined;
      secret = form.get("client_secret") ?? undefined;
    }
    const method = basic ? "basic" : "body";
    if (method !== options.auth) return refuse(res, 401, "invalid_client", `client authenticated by ${method}, expected ${options.auth}`);
    if (id !== options.clientId || secret !== options.clientSecret) return refuse(res, 401, "invalid_client", "wrong client id or secret");
    const grant = form.get("grant_type") ?? "";
    fake.grants.push(grant);
    if (options.scope !== undefined && form.get("scope") !== options.scope) return refuse(res, 400, "invalid_scope", `scope ${form.get("scope")}`);
    let rotated: string | undefined;
    if (grant === "refresh_token") {
      if (!form.get("refresh_token") || form.get("refresh_token") !== fake.validRefreshToken) return refuse(res, 400, "invalid_grant", "refresh token not the current one");
      rotated = `rt_${randomBytes(12).toString("hex")}`;
    } else if (grant !== "client_credentials") {
      return refuse(res, 400, "unsupported_grant_type", `grant ${grant}`);
    }
    if (fake.fail !== undefined) return refuse(res, fake.fail, "temporarily_unavailable", "told to fail");
    if (rotated) {
      fake.validRefreshToken = rotated;
      fake.issued.push(rotated);
    }
    fake.mints++;
    const token = `at_${randomBytes(18).toString("hex")}`;
    fake.issued.push(token);
    json(res, 200, { access_token: token, token_type: "Bearer", ...(fake.expiresIn !== undefined ? { expires_in: fake.expiresIn } : {}), ...(rotated ? { refresh_token: rotated } : {}) });
  }, pki);
  return fake;
}

export interface FakeVault extends Refusals {
  upstream: TestUpstream;
  reads: number;
  /** The token it accepts; change it to model a rotated service-account token. */
  token: string;
  data: Record<string, unknown>;
  leaseDuration: number;
  namespace: string | undefined;
  close(): Promise<void>;
}

/** Vault's KV version 2 read: GET /v1/{mount}/data/{name} with X-Vault-Token (and X-Vault-Namespace when one is set). */
export async function startFakeVault(pki: ServerPki, options: { path: string; token: string; data: Record<string, unknown> }): Promise<FakeVault> {
  const fake: FakeVault = { upstream: undefined!, reads: 0, token: options.token, data: options.data, leaseDuration: 0, namespace: undefined, refusals: [], close: () => fake.upstream.close() };
  fake.upstream = await startUpstream((req, res) => {
    if (req.method !== "GET" || req.url !== `/v1/${options.path}`) {
      fake.refusals.push(`unexpected ${req.method} ${req.url}`);
      return json(res, 404, { errors: [] });
    }
    if (req.headers["x-vault-token"] !== fake.token) {
      fake.refusals.push("wrong X-Vault-Token");
      return json(res, 403, { errors: ["permission denied"] });
    }
    if (fake.namespace !== undefined && req.headers["x-vault-namespace"] !== fake.namespace) {
      fake.refusals.push(`namespace ${req.headers["x-vault-namespace"]}`);
      return json(res, 403, { errors: ["permission denied"] });
    }
    fake.reads++;
    json(res, 200, {
      request_id: randomBytes(8).toString("hex"),
      lease_id: "",
      renewable: false,
      lease_duration: fake.leaseDuration,
      data: { data: fake.data, metadata: { created_time: new Date().toISOString(), version: 1, destroyed: false } },
    });
  }, pki);
  return fake;
}
