import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { renderPolicyJsonSchema } from "../src/policy/json-schema.js";
import { formatPolicyError, parsePolicy, PolicyInvalidError } from "../src/policy/load.js";

const root = join(import.meta.dirname, "..");

function errorsOf(text: string): string[] {
  try {
    parsePolicy(text, "p.yaml");
  } catch (error) {
    if (error instanceof PolicyInvalidError) return error.errors.map((e) => `${e.line}:${e.col}: ${e.message}`);
    throw error;
  }
  return [];
}

describe("policy validation", () => {
  it("shows a policy's control characters as \\xNN in its errors: a key must not drive the operator's terminal", () => {
    let message = "";
    try {
      parsePolicy('version: 1\n"bad\\e[31mRED\\e]0;title\\a": 1\n', "esc.yaml");
    } catch (error) {
      message = (error as PolicyInvalidError).errors.map(formatPolicyError).join("\n");
    }
    expect(message).toContain("bad\\x1b[31mRED\\x1b]0;title\\x07");
    expect(message).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f]/);
  });

  it("reports every error at once, each with its line and column, unknown keys included", () => {
    const errors = errorsOf(
      [
        "version: 1",
        "secrets:",
        "  gh: { env: GH }",
        "  both: { env: A, file: /b }",
        "clients:",
        "  - { name: a1, token: { env: T } }",
        "network:",
        "  defualt: allow",
        "  allow_ips: [not-an-ip]",
        "  rules:",
        "    - { name: r1, action: allow, hosts: [x.test], clients: [ghost] }",
        "    - { name: r1, action: maybe, hosts: [y.test] }",
        "credentials:",
        '  - { name: c1, hosts: [x.test], header: { name: Authorization, value: "Bearer ${secrets.nope}" } }',
        "  - { name: c2, hosts: [x.test] }",
        "placeholders:",
        "  - { name: p1, placeholder: SHORT, secret: gh, hosts: [x.test] }",
        "upstream:",
        "  resolve: { a.test: nowhere }",
      ].join("\n"),
    );
    expect(errors).toEqual([
      expect.stringMatching(/^4:9: secrets\.both: expected exactly one of env, file, command, github_app, oauth2 or vault \(got env, file\)/),
      expect.stringMatching(/^8:3: network\.defualt: unknown key "defualt"/),
      expect.stringMatching(/^12:27: network\.rules\.1\.action: /),
      expect.stringMatching(/^15:5: credentials\.1: expected exactly one of header, query or aws_sigv4/),
      expect.stringMatching(/^17:30: placeholders\.0\.placeholder: a placeholder must be at least 8 characters/),
    ]);
  });

  it("checks references between sections once the shape is right", () => {
    const errors = errorsOf(
      [
        "version: 1",
        "secrets:",
        "  gh: { env: GH }",
        "network:",
        "  allow_ips: [10.0.0.0/8, not-an-ip]",
        "  rules:",
        "    - { name: r1, action: allow, hosts: [x.test], clients: [ghost] }",
        "    - { name: r1, action: deny, hosts: [y.test] }",
        "credentials:",
        '  - { name: c1, hosts: [x.test], header: { name: Authorization, value: "Bearer ${secrets.nope}" } }',
        '  - { name: c2, hosts: [x.test], query: { name: token, value: "${env.HOME}" } }',
        "placeholders:",
        "  - { name: p1, placeholder: PCX_PLACEHOLDER_1, secret: missing, hosts: [x.test] }",
        "upstream:",
        "  resolve: { a.test: nowhere }",
      ].join("\n"),
    );
    expect(errors).toEqual([
      expect.stringMatching(/^5:27: network\.allow_ips\.1: "not-an-ip" is not an IP address or CIDR/),
      expect.stringMatching(/^7:61: network\.rules\.0\.clients\.0: client "ghost" is not defined/),
      expect.stringMatching(/^8:15: network\.rules\.1\.name: duplicate name "r1"/),
      expect.stringMatching(/^10:72: credentials\.0\.header\.value: \$\{secrets\.nope\} names a secret that is not defined/),
      expect.stringMatching(/^11:63: credentials\.1\.query\.value: malformed template \$\{env\.HOME\}/),
      expect.stringMatching(/^13:57: placeholders\.0\.secret: secret "missing" is not defined/),
      expect.stringMatching(/^15:22: upstream\.resolve\.a\.test: "nowhere" is not an IP address/),
    ]);
  });

  it("fills defaults: deny by default, private destinations denied", () => {
    const { policy } = parsePolicy("version: 1\n");
    expect(policy.network).toMatchObject({ default: "deny", private_destinations: "deny", allow_ips: [], rules: [] });
    expect(policy.upstream).toMatchObject({ connect_timeout: 10_000, response_timeout: 300_000 });
  });

  it("accepts the default policy and every worked example", () => {
    const files = ["policies/default.yaml", ...readdirSync(join(root, "policies/examples")).map((f) => `policies/examples/${f}`)];
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const file of files) expect(() => parsePolicy(readFileSync(join(root, file), "utf8"), file)).not.toThrow();
  });

  it("ships policies/schema.json generated from the same schema (run `npm run schema` after changing it)", () => {
    expect(readFileSync(join(root, "policies/schema.json"), "utf8")).toBe(renderPolicyJsonSchema());
    const schema = JSON.parse(renderPolicyJsonSchema()) as { properties: Record<string, unknown>; additionalProperties: boolean };
    expect(Object.keys(schema.properties)).toEqual(
      expect.arrayContaining(["version", "proxy", "ca", "upstream", "log", "secrets", "clients", "network", "credentials", "placeholders", "passthrough"]),
    );
    expect(schema.additionalProperties).toBe(false);
  });
});

describe("relative paths in a policy (SPEC 12)", () => {
  it("makes every secret file absolute against the policy's folder, however deep the source sits", () => {
    const loaded = parsePolicy(
      [
        "version: 1",
        "upstream:",
        "  proxy: { url: http://127.0.0.1:3128, username: egress, password: { file: secrets/parent } }",
        "secrets:",
        "  plain: { file: secrets/plain }",
        "  gh: { github_app: { app_id: 1, installation_id: 2, private_key: { file: keys/app.pem } } }",
        "  svc: { oauth2: { token_url: https://auth.example.com/token, grant: refresh_token, client_id: { env: CID }, refresh_token: { file: ./rt } } }",
        "  kv: { vault: { address: https://vault.example.com, path: secret/data/x, field: k, token: { file: vault-token } } }",
        "credentials:",
        "  - { name: aws, hosts: ['*.amazonaws.com'], aws_sigv4: { access_key_id: { file: aws/id }, secret_access_key: { file: /abs/secret } } }",
        "admin: { token: { file: admin-token } }",
      ].join("\n"),
      "/etc/pcx/policy.yaml",
      "/etc/pcx",
    );
    const { policy } = loaded;
    expect(policy.secrets.plain).toMatchObject({ file: "/etc/pcx/secrets/plain" });
    expect(JSON.stringify(policy.secrets.gh)).toContain('"file":"/etc/pcx/keys/app.pem"');
    expect(JSON.stringify(policy.secrets.svc)).toContain('"file":"/etc/pcx/rt"');
    expect(JSON.stringify(policy.secrets.kv)).toContain('"file":"/etc/pcx/vault-token"');
    expect(JSON.stringify(policy.credentials[0]!.aws_sigv4)).toContain('"file":"/etc/pcx/aws/id"');
    expect(JSON.stringify(policy.credentials[0]!.aws_sigv4)).toContain('"file":"/abs/secret"');
    expect(JSON.stringify(policy.upstream.proxy)).toContain('"file":"/etc/pcx/secrets/parent"');
    expect(policy.admin.token).toMatchObject({ file: "/etc/pcx/admin-token" });
  });
});

describe("cross-field checks in the same run as schema errors", () => {
  it("reports names that are not defined alongside a schema error elsewhere, in one run", () => {
    const errors = errorsOf(
      [
        "version: 1",
        "proxy: { listen: 8080 }",
        "secrets:",
        "  gh: { env: GH }",
        "clients:",
        "  - { name: a1, token: { env: T } }",
        "network:",
        "  rules:",
        "    - { name: r, action: allow, hosts: [x.example], clients: [nobody] }",
        "credentials:",
        '  - { name: c, hosts: [x.example], header: { name: Authorization, value: "Bearer ${secrets.missing}" } }',
      ].join("\n"),
    );
    expect(errors).toHaveLength(3);
    expect(errors[0]).toMatch(/^2:\d+: proxy.listen: /);
    expect(errors[1]).toMatch(/^9:\d+: network\.rules\.0\.clients\.0: client "nobody" is not defined under clients/);
    expect(errors[2]).toMatch(/^11:\d+: credentials\.0\.header\.value: \$\{secrets\.missing\} names a secret that is not defined under secrets/);
  });

  it("does not guess at names when the section they are looked up in is itself broken", () => {
    const errors = errorsOf(
      ["version: 1", "secrets:", "  gh: { env: GH, file: /x }", "credentials:", '  - { name: c, hosts: [x.example], header: { name: A, value: "${secrets.gh}" } }'].join("\n"),
    );
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^3:\d+: secrets\.gh: expected exactly one of/);
  });
});

describe("the default policy", () => {
  it("keeps its CA in the repository's certs/, where `make run` creates it", async () => {
    const { loadPolicyFile } = await import("../src/policy/load.js");
    const loaded = await loadPolicyFile(join(root, "policies/default.yaml"));
    expect(loaded.policy.ca.dir).toBe(join(root, "certs"));
    expect(readFileSync(join(root, "Makefile"), "utf8")).toMatch(/test -f certs\/ca\.pem \|\| node dist\/cli\.js init-ca --dir certs/);
  });
});
