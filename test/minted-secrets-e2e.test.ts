import { generateKeyPairSync, randomBytes } from "node:crypto";
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeUpstreamPki, tempDir, type ServerPki } from "./helpers/pki.js";
import { policyTrusting, startProxy, type TestProxy } from "./helpers/proxy.js";
import { startFakeGitHub, startFakeOAuth, startFakeVault, type FakeGitHub, type FakeOAuth, type FakeVault } from "./helpers/token-services.js";
import { startUpstream, type TestUpstream } from "./helpers/upstream.js";

const CLIENT_SECRET = `cs-${randomBytes(10).toString("hex")}`;
const VAULT_TOKEN = `hvs.${randomBytes(12).toString("hex")}`;
const VAULT_VALUE = `sk-vault-${randomBytes(12).toString("hex")}`;
const HOSTS = ["github.test", "oauth.test", "vault.test", "gh.api.test", "flaky.api.test", "svc.api.test", "openai.api.test", "rotate.api.test", "cmd.api.test", "ph.api.test"];

let pki: ServerPki;
let dir: string;
let privateKeyPem: string;
let github: FakeGitHub;
let oauth: FakeOAuth;
let vault: FakeVault;
let upstream: TestUpstream;
let proxy: TestProxy;
let rotatingFile: string;
let commandFile: string;

/** The upstream echoes the credential it received, in a header and in the body: portcullis must scrub both. */
async function startEchoUpstream(server: ServerPki): Promise<TestUpstream> {
  return startUpstream((req, res) => {
    const received = req.headers.authorization ?? (req.headers["x-api-key"] as string | undefined) ?? "";
    res.writeHead(200, { "content-type": "text/plain", "x-echo": received }).end(`you sent: ${received}\n`);
  }, server);
}

function url(host: string, path = "/"): string {
  return `https://${host}:${upstream.port}${path}`;
}

/** What the upstream received on requests to one host. */
function receivedBy(host: string): string[] {
  return upstream.seen
    .filter((seen) => {
      const index = seen.rawHeaders.findIndex((name, i) => i % 2 === 0 && name.toLowerCase() === "host");
      return seen.rawHeaders[index + 1]?.startsWith(`${host}:`);
    })
    .map((seen) => {
      const index = seen.rawHeaders.findIndex((name, i) => i % 2 === 0 && ["authorization", "x-api-key"].includes(name.toLowerCase()));
      return seen.rawHeaders[index + 1] ?? "";
    });
}

async function get(host: string, path = "/") {
  const res = await request(url(host, path), { dispatcher: proxy.dispatcher });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

beforeAll(async () => {
  pki = await makeUpstreamPki("mint-e2e");
  dir = tempDir("mint-e2e");
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  privateKeyPem = privateKey.export({ type: "pkcs1", format: "pem" }).toString();
  const keyFile = join(dir, "app.pem");
  writeFileSync(keyFile, privateKeyPem, { mode: 0o600 });
  writeFileSync(join(dir, "vault-token"), VAULT_TOKEN);
  rotatingFile = join(dir, "rotating");
  writeFileSync(rotatingFile, "rotating-value-one\n");
  commandFile = join(dir, "command-output");
  writeFileSync(commandFile, "command-value-one");
  github = await startFakeGitHub(pki, { appId: "12345", publicKey, prefix: "/api/v3", expectBody: { repositories: ["repo-a"], permissions: { contents: "read" } } });
  oauth = await startFakeOAuth(pki, { clientId: "portcullis-e2e", clientSecret: CLIENT_SECRET, auth: "basic", scope: "read write" });
  vault = await startFakeVault(pki, { path: "secret/data/openai", token: VAULT_TOKEN, data: { api_key: VAULT_VALUE } });
  upstream = await startEchoUpstream(pki);
  process.env.PCX_MINT_E2E_CID = "portcullis-e2e";
  process.env.PCX_MINT_E2E_SECRET = CLIENT_SECRET;
  const app = (installation: number) =>
    `{ github_app: { app_id: 12345, installation_id: ${installation}, private_key: { file: ${JSON.stringify(keyFile)} }, api: "https://github.test:${github.upstream.port}/api/v3", repositories: [repo-a], permissions: { contents: read } } }`;
  // The OAuth endpoint is down when portcullis starts: a warning, not a refusal to start.
  oauth.fail = 503;
  github.failing.set("999", 403);
  proxy = await startProxy(
    policyTrusting(
      pki.caFile,
      `
secrets:
  gh: ${app(678)}
  gh_flaky: ${app(999)}
  svc: { oauth2: { token_url: "https://oauth.test:${oauth.upstream.port}/oauth/token", client_id: { env: PCX_MINT_E2E_CID }, client_secret: { env: PCX_MINT_E2E_SECRET }, scope: "read write" } }
  openai: { vault: { address: "https://vault.test:${vault.upstream.port}", path: secret/data/openai, field: api_key, token: { file: ${JSON.stringify(join(dir, "vault-token"))} } } }
  rotating: { file: ${JSON.stringify(rotatingFile)}, ttl: 200ms }
  cmd: { command: ${JSON.stringify(`cat ${commandFile}`)}, ttl: 200ms }
credentials:
  - { name: github, hosts: [gh.api.test], header: { name: Authorization, value: "Bearer \${secrets.gh}" } }
  - { name: github-flaky, hosts: [flaky.api.test], header: { name: Authorization, value: "Bearer \${secrets.gh_flaky}" } }
  - { name: svc, hosts: [svc.api.test], header: { name: Authorization, value: "Bearer \${secrets.svc}" } }
  - { name: openai, hosts: [openai.api.test], header: { name: X-Api-Key, value: "\${secrets.openai}" } }
  - { name: rotating, hosts: [rotate.api.test], header: { name: Authorization, value: "Bearer \${secrets.rotating}" } }
  - { name: cmd, hosts: [cmd.api.test], header: { name: Authorization, value: "Bearer \${secrets.cmd}" } }
placeholders:
  - { name: openai-ph, placeholder: PCX_OPENAI_PLACEHOLDER, secret: openai, hosts: [ph.api.test], in: [header] }
`,
    )// Generous timeouts: the machine running the tests may be busy; nothing here waits on them.
      .replace("  connect_timeout: 2s\n  response_timeout: 5s\n", `  connect_timeout: 15s\n  response_timeout: 20s\n  resolve: { ${HOSTS.map((host) => `${host}: 127.0.0.1`).join(", ")} }\n`),
  );
});

afterAll(async () => {
  await proxy?.close();
  await Promise.all([github, oauth, vault, upstream].map((server) => server?.close()));
});

describe("minted and fetched secrets through portcullis", () => {
  it("warns at start about a token endpoint that is down, answers 502 credential_unavailable while it is, and forwards nothing", async () => {
    const warning = await proxy.diagnostics.waitFor((line) => line.secret === "svc");
    expect(warning.msg).toMatch(/secret "svc" is unavailable: oauth2 oauth\.test:\d+\/oauth\/token: .* answered HTTP 503 \(temporarily_unavailable\); requests that need it will get 502 credential_unavailable/);
    const res = await get("svc.api.test", "/down");
    expect(res.status).toBe(502);
    expect(res.headers["x-portcullis-error"]).toBe("credential_unavailable");
    const body = JSON.parse(res.body) as { error: { type: string; message: string } };
    expect(body.error.message).toMatch(/credential "svc": secret "svc" is unavailable: oauth2 .* answered HTTP 503/);
    expect(res.body).not.toContain("rt_never_logged");
    expect(receivedBy("svc.api.test")).toEqual([]);
  });

  it("once the endpoint recovers, 20 concurrent requests share one mint and each carries the token", async () => {
    oauth.fail = undefined;
    const before = oauth.mints;
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => get("svc.api.test", `/r${i}`)));
    expect(answers.filter((answer) => answer.status !== 200).map((answer) => answer.body)).toEqual([]);
    expect(oauth.refusals.filter((why) => why !== "told to fail")).toEqual([]);
    expect(oauth.mints).toBe(before + 1);
    const token = oauth.issued.at(-1)!;
    expect(receivedBy("svc.api.test")).toEqual(Array(20).fill(`Bearer ${token}`));
    // The upstream echoed the token back; the client sees it scrubbed in the header and the body.
    for (const answer of answers) {
      expect(answer.body).toBe("you sent: Bearer [REDACTED]\n");
      expect(answer.headers["x-echo"]).toBe("Bearer [REDACTED]");
    }
  });

  it("puts a GitHub App installation token (minted once at start) on GitHub requests", async () => {
    expect(github.refusals.filter((why) => why !== "told to fail")).toEqual([]);
    const answers = await Promise.all(Array.from({ length: 10 }, () => get("gh.api.test", "/repos/o/repo-a")));
    expect(answers.filter((answer) => answer.status !== 200).map((answer) => answer.body)).toEqual([]);
    expect(github.mints.get("678")).toBe(1);
    const token = github.issued.find((value) => value.startsWith("ghs_"))!;
    expect(receivedBy("gh.api.test")).toEqual(Array(10).fill(`Bearer ${token}`));
    expect(answers[0]!.body).not.toContain(token);
    const line = await proxy.audit.waitFor((l) => l.host === "gh.api.test");
    expect(line.credentials).toEqual(["github"]);
    expect((line.req_headers as Record<string, string>)["authorization"] ?? "[REDACTED]").toBe("[REDACTED]");
  });

  it("a GitHub refusal fails closed with its status only, and the next request mints once GitHub answers again", async () => {
    try {
      const res = await get("flaky.api.test", "/x");
      expect(res.status).toBe(502);
      const body = JSON.parse(res.body) as { error: { type: string; message: string } };
      expect(body.error.type).toBe("credential_unavailable");
      expect(body.error.message).toMatch(/github_app installation 999: https:\/\/github\.test:\d+\/api\/v3\/app\/installations\/999\/access_tokens answered HTTP 403$/);
      expect(res.body).not.toContain("ghs_should_never_be_logged");
      expect(receivedBy("flaky.api.test")).toEqual([]);
    } finally {
      github.failing.clear();
    }
    const res = await get("flaky.api.test", "/x");
    expect(res.status).toBe(200);
    expect(github.mints.get("999")).toBe(1);
    expect(receivedBy("flaky.api.test")).toEqual([`Bearer ${github.issued.at(-1)}`]);
  });

  it("puts a Vault KV v2 field on requests, read with the Vault token", async () => {
    const res = await get("openai.api.test", "/v1/models");
    expect(res.status).toBe(200);
    expect(vault.refusals).toEqual([]);
    expect(receivedBy("openai.api.test")).toEqual([VAULT_VALUE]);
    expect(res.body).toBe("you sent: [REDACTED]\n");
  });

  it("swaps a placeholder for the Vault value (placeholders use minted secrets like credentials do)", async () => {
    const res = await request(url("ph.api.test", "/v1/models"), { dispatcher: proxy.dispatcher, headers: { "x-api-key": "PCX_OPENAI_PLACEHOLDER" } });
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe("you sent: [REDACTED]\n");
    expect(receivedBy("ph.api.test")).toEqual([VAULT_VALUE]);
    expect(vault.reads).toBe(1);
  });

  /** Keeps `workers` requests in flight to host while `during` runs; returns every status they got. */
  async function underLoad(host: string, during: () => Promise<void>, workers = 4): Promise<number[]> {
    let stop = false;
    const statuses: number[] = [];
    const loops = Array.from({ length: workers }, async () => {
      while (!stop) statuses.push((await get(host, "/under-load")).status);
    });
    try {
      await during();
    } finally {
      stop = true;
      await Promise.all(loops);
    }
    return statuses;
  }

  /** Replaces a file as Kubernetes and most secret managers do: by a rename, never half-written. */
  function replaceFile(file: string, content: string): void {
    const next = `${file}.next`;
    writeFileSync(next, content);
    renameSync(next, file);
  }

  it("rotation: a changed file secret is used within its ttl, with no restart and no dropped request", async () => {
    const host = "rotate.api.test";
    const statuses = await underLoad(host, async () => {
      await expect.poll(() => receivedBy(host).length, { timeout: 20_000 }).toBeGreaterThan(8);
      replaceFile(rotatingFile, "rotating-value-two\n");
      await expect.poll(() => receivedBy(host).at(-1), { timeout: 20_000 }).toBe("Bearer rotating-value-two");
      const switchedAt = receivedBy(host).length;
      await expect.poll(() => receivedBy(host).length, { timeout: 20_000 }).toBeGreaterThan(switchedAt + 8);
    });
    expect(new Set(statuses)).toEqual(new Set([200]));
    const seen = receivedBy(host);
    expect(new Set(seen)).toEqual(new Set(["Bearer rotating-value-one", "Bearer rotating-value-two"]));
    // Once the new value is in use the old one does not come back (bar requests already in flight, one per worker).
    expect(seen.slice(seen.indexOf("Bearer rotating-value-two") + 4)).not.toContain("Bearer rotating-value-one");
  });

  it("rotation: a command secret whose output changes is used within its ttl, with no dropped request", async () => {
    const host = "cmd.api.test";
    const statuses = await underLoad(host, async () => {
      await expect.poll(() => receivedBy(host).length, { timeout: 20_000 }).toBeGreaterThan(8);
      replaceFile(commandFile, "command-value-two");
      await expect.poll(() => receivedBy(host).at(-1), { timeout: 20_000 }).toBe("Bearer command-value-two");
    });
    expect(new Set(statuses)).toEqual(new Set([200]));
    expect(new Set(receivedBy(host))).toEqual(new Set(["Bearer command-value-one", "Bearer command-value-two"]));
  });

  it("nothing minted or fetched, nor what minted it, appears in any audit or diagnostic line", async () => {
    const values = [
      ...github.issued,
      ...oauth.issued,
      CLIENT_SECRET,
      VAULT_TOKEN,
      VAULT_VALUE,
      "ghs_should_never_be_logged",
      "rt_never_logged",
      ...privateKeyPem.split("\n").filter((line) => line.length > 40),
    ];
    expect(github.issued.length).toBeGreaterThan(3);
    const logged = [...proxy.audit.raw, ...proxy.diagnostics.raw].join("");
    expect(proxy.audit.raw.length).toBeGreaterThan(40);
    for (const value of values) expect(logged).not.toContain(value);
  });
});
