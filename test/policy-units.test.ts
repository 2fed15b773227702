import { describe, expect, it } from "vitest";
import { EchoScrubber, scrubHeaderValues, scrubText } from "../src/credentials/echo-scrub.js";
import { planCredentials } from "../src/credentials/inject.js";
import { setQueryParam } from "../src/credentials/query.js";
import { SecretStore, SecretUnavailable } from "../src/credentials/secrets.js";
import { Scrubber } from "../src/log/scrub.js";
import { classifyAddress, DestinationGuard } from "../src/policy/destinations.js";
import { hostMatches, normaliseHost } from "../src/policy/hosts.js";
import { Identities, tokenSecretName } from "../src/credentials/identity.js";
import { parsePolicy } from "../src/policy/load.js";
import { normalisePath, pathMatches, pathReadings } from "../src/policy/paths.js";
import { decide, decideConnect, decideEveryReading } from "../src/policy/rules.js";
import { createLookup } from "../src/transport/upstream/lookup.js";

describe("host patterns", () => {
  it.each([
    ["api.github.com", "api.github.com", true],
    ["api.github.com", "API.GitHub.com.", true],
    ["api.github.com", "github.com", false],
    ["*.githubusercontent.com", "raw.githubusercontent.com", true],
    ["*.githubusercontent.com", "a.b.githubusercontent.com", true],
    ["*.githubusercontent.com", "githubusercontent.com", false],
    ["*.githubusercontent.com", "evilgithubusercontent.com", false],
    ["*.example.com", "x.example.com.evil.net", false],
    ["bücher.example", "xn--bcher-kva.example", true],
    ["*.bücher.example", "shop.xn--bcher-kva.example", true],
    ["10.0.0.1", "10.0.0.1", true],
    ["::1", "[::1]", true],
    ["127.0.0.1", "::ffff:127.0.0.1", true],
  ])("%s matches %s: %s", (pattern, host, expected) => {
    expect(hostMatches(pattern, normaliseHost(host))).toBe(expected);
  });
});

describe("path normalisation", () => {
  it.each([
    ["/repos/a/b?x=1", "/repos/a/b"],
    ["/a/../b", "/b"],
    ["/a/%2e%2e/b", "/b"],
    ["/a/%2E%2E/%2e/b", "/b"],
    ["//repos///a", "/repos/a"],
    ["/repos/a/", "/repos/a/"],
    ["/../../etc/passwd", "/etc/passwd"],
    ["/a%2fb/../c", "/a/c"],
    ["/a\\..\\admin", "/admin"],
    ["/%zz", "/%zz"],
    ["/%61dmin/users%zz", "/admin/users%zz"],
    ["/%61dmin/%ff%fe/x", "/admin/%ff%fe/x"],
  ])("%s -> %s", (raw, expected) => {
    expect(normalisePath(raw)).toBe(expected);
  });

  it("reads an encoded slash and ;params every way a server might, and the policy must allow every reading", () => {
    expect(pathReadings("/repos/victim/x/..%2F..%2F..%2Frepos/myorg/y")).toEqual(["/repos/myorg/y", "/repos/victim/x/..%2F..%2F..%2Frepos/myorg/y"]);
    expect(pathReadings("/public/..;/admin")).toEqual(["/public/..;/admin", "/admin"]);
    expect(pathReadings("/plain/path?q=%2F")).toEqual(["/plain/path"]);
    const allowMyOrg = parsePolicy('version: 1\nnetwork:\n  rules:\n    - { name: myorg, action: allow, hosts: [api.test], paths: ["/repos/myorg/**"] }\n').policy;
    const denyAdmin = parsePolicy('version: 1\nnetwork:\n  default: allow\n  rules:\n    - { name: no-admin, action: deny, hosts: [api.test], paths: ["/admin/**", "/admin"] }\n').policy;
    const facts = { host: "api.test", port: 443, client: null, method: "GET" };
    expect(decideEveryReading(allowMyOrg, facts, pathReadings("/repos/victim/x/..%2F..%2F..%2Frepos/myorg/y")).action).toBe("deny");
    expect(decideEveryReading(allowMyOrg, facts, pathReadings("/repos/myorg/branches/feature%2Fx")).action).toBe("allow");
    expect(decideEveryReading(denyAdmin, facts, pathReadings("/public%2F..%2Fadmin"))).toMatchObject({ action: "deny", rule: "no-admin" });
    expect(decideEveryReading(denyAdmin, facts, pathReadings("/public/..;/admin"))).toMatchObject({ action: "deny", rule: "no-admin" });
  });

  it("globs: ** crosses segments, * does not", () => {
    expect(pathMatches("/repos/**", "/repos/a/b/c")).toBe(true);
    expect(pathMatches("/repos/*", "/repos/a/b")).toBe(false);
    expect(pathMatches("/repos/*", "/repos/a")).toBe(true);
    expect(pathMatches("/repos/**", "/admin")).toBe(false);
  });
});

const rulesPolicy = parsePolicy(`
version: 1
clients:
  - { name: agent-1, token: { env: X1 } }
  - { name: agent-2, token: { env: X2 } }
network:
  default: deny
  rules:
    - { name: no-admin, action: deny, hosts: [api.example.com], paths: ["/admin/**"] }
    - { name: read, action: allow, hosts: [api.example.com], methods: [GET], paths: ["/repos/**"] }
    - { name: agent-2-writes, action: allow, hosts: [api.example.com], methods: [POST], clients: [agent-2] }
    - { name: block-evil, action: deny, hosts: ["*.evil.test"] }
    - { name: evil-allowed-too-late, action: allow, hosts: [a.evil.test] }
    - { name: alt-port, action: allow, hosts: [alt.example.com], ports: [8443] }
`).policy;

describe("request decisions: first match wins, then the default", () => {
  const facts = (over: Partial<Parameters<typeof decide>[1]>) => ({ host: "api.example.com", port: 443, client: null, method: "GET", path: "/", ...over });
  it.each([
    [{ path: "/repos/a" }, "allow", "read"],
    [{ path: normalisePath("/repos/../admin/x") }, "deny", "no-admin"],
    [{ path: "/admin/users" }, "deny", "no-admin"],
    [{ method: "DELETE", path: "/repos/a" }, "deny", null],
    [{ method: "POST", client: "agent-2" }, "allow", "agent-2-writes"],
    [{ method: "POST", client: "agent-1" }, "deny", null],
    [{ method: "POST", client: null }, "deny", null],
    [{ host: "a.evil.test" }, "deny", "block-evil"],
    [{ host: "alt.example.com", port: 8443 }, "allow", "alt-port"],
    [{ host: "alt.example.com", port: 443 }, "deny", null],
    [{ port: 80, path: "/repos/a" }, "allow", "read"],
    [{ port: 8080, path: "/repos/a" }, "deny", null],
  ] as const)("%o -> %s by %s", (over, action, rule) => {
    const decision = decide(rulesPolicy, facts(over));
    expect(decision.action).toBe(action);
    expect(decision.rule).toBe(rule);
    expect(decision.reason.length).toBeGreaterThan(10);
  });

  it("CONNECT is refused only when nothing inside could be allowed", () => {
    expect(decideConnect(rulesPolicy, { host: "api.example.com", port: 443, client: null }).action).toBe("allow");
    expect(decideConnect(rulesPolicy, { host: "a.evil.test", port: 443, client: null })).toMatchObject({ action: "deny", rule: "block-evil" });
    expect(decideConnect(rulesPolicy, { host: "other.test", port: 443, client: null })).toMatchObject({ action: "deny", rule: null });
    expect(decideConnect(rulesPolicy, { host: "alt.example.com", port: 443, client: null }).action).toBe("deny");
  });
});

describe("destination classifier", () => {
  it.each([
    ["127.0.0.1", false],
    ["127.8.9.10", false],
    ["10.1.2.3", false],
    ["172.16.0.1", false],
    ["192.168.1.1", false],
    ["169.254.169.254", false],
    ["100.64.0.1", false],
    ["0.0.0.0", false],
    ["255.255.255.255", false],
    ["224.0.0.1", false],
    ["::1", false],
    ["::", false],
    ["fe80::1", false],
    ["fc00::1", false],
    ["fd12:3456::1", false],
    ["::ffff:127.0.0.1", false],
    ["::ffff:10.0.0.1", false],
    ["64:ff9b::a9fe:a9fe", false],
    ["2002:7f00:1::", false],
    ["2002:a00:1::1", false],
    ["::7f00:1", false],
    ["::a00:1", false],
    ["64:ff9b:1:7f00:0:100:808:808", false],
    ["64:ff9b:1::808:808", false],
    ["::808:808", true],
    ["8.8.8.8", true],
    ["1.1.1.1", true],
    ["2606:4700:4700::1111", true],
    ["::ffff:8.8.8.8", true],
    ["64:ff9b::808:808", true],
  ])("%s public: %s", (address, isPublic) => {
    expect(classifyAddress(address).public).toBe(isPublic);
  });

  it("allow_ips exempts exactly what it lists; private_destinations: allow lets all through", () => {
    const guard = new DestinationGuard("deny", ["127.0.0.1/32", "10.20.0.0/24", "fd00::1"]);
    expect(guard.check("127.0.0.1")).toBeUndefined();
    expect(guard.check("::ffff:127.0.0.1")).toBeUndefined();
    expect(guard.check("127.0.0.2")).toMatch(/private/);
    expect(guard.check("10.20.0.7")).toBeUndefined();
    expect(guard.check("10.20.1.7")).toMatch(/10\.20\.1\.7/);
    expect(guard.check("fd00::1")).toBeUndefined();
    expect(guard.check("169.254.169.254")).toMatch(/linkLocal/);
    expect(new DestinationGuard("allow", []).check("10.0.0.1")).toBeUndefined();
  });

  it("checks every address a name resolves to, including static overrides (no traffic: lookup only)", async () => {
    const lookup = createLookup({ "internal.test": "10.0.0.1", "metadata.test": "169.254.169.254", "fine.test": "8.8.8.8" }, new DestinationGuard("deny", []));
    const resolve = (name: string, all: boolean) =>
      new Promise<unknown>((ok, fail) => lookup(name, { all }, (error, address) => (error ? fail(error) : ok(address))));
    await expect(resolve("internal.test", false)).rejects.toMatchObject({ code: "EPORTCULLIS_DESTINATION" });
    await expect(resolve("Metadata.Test.", true)).rejects.toThrow(/169\.254\.169\.254/);
    await expect(resolve("fine.test", false)).resolves.toBe("8.8.8.8");
    await expect(resolve("localhost", true)).rejects.toThrow(/loopback/);
  });
});

describe("credential scope", () => {
  it("a credential with paths goes on only when every reading of the path is in them", () => {
    const { policy } = parsePolicy(`version: 1
secrets: { k: { env: PCX_UNIT_SCOPED } }
credentials:
  - { name: scoped, hosts: [api.test], paths: ["/public/**"], header: { name: X-Key, value: "\${secrets.k}" } }
`);
    const plan = (path: string) => planCredentials(policy.credentials, "api.test", pathReadings(path), "https").map((credential) => credential.name);
    expect(plan("/public/ok")).toEqual(["scoped"]);
    expect(plan("/public/a%2Fb")).toEqual(["scoped"]);
    // Tomcat, Spring and Jetty read "..;" as a parent step; servers that decode twice read %252e%252e so.
    expect(plan("/public/..;/admin/keys")).toEqual([]);
    expect(plan("/public/%252e%252e/admin/keys")).toEqual([]);
    expect(plan("/admin/keys")).toEqual([]);
  });
});

describe("query credentials", () => {
  it.each([
    ["/ws", "token", "s3cret", "/ws?token=s3cret"],
    ["/ws?a=1&token=fake&b=2", "token", "s3cret", "/ws?a=1&b=2&token=s3cret"],
    ["/ws?token=fake&token=again", "token", "x y", "/ws?token=x%20y"],
    ["/ws?%74oken=fake", "token", "v", "/ws?token=v"],
    ["/ws?a=%ZZ", "token", "v", "/ws?a=%ZZ&token=v"],
  ])("%s + %s=%s -> %s", (path, name, value, expected) => {
    expect(setQueryParam(path, name, value)).toBe(expected);
  });
});

describe("echo scrubbing", () => {
  async function run(chunks: string[], secrets: string[]): Promise<{ out: string; pieces: number }> {
    const scrubber = new EchoScrubber(secrets);
    const out: Buffer[] = [];
    scrubber.on("data", (chunk: Buffer) => out.push(chunk));
    for (const chunk of chunks) scrubber.write(Buffer.from(chunk));
    scrubber.end();
    await new Promise((resolve) => scrubber.once("end", resolve));
    return { out: Buffer.concat(out).toString(), pieces: out.length };
  }

  it("replaces a secret split across any chunk boundary", async () => {
    const secret = "tok_ABCDEFGHIJ";
    const text = `before ${secret} middle ${secret} after`;
    for (let cut = 1; cut < text.length; cut++) {
      const { out } = await run([text.slice(0, cut), text.slice(cut)], [secret]);
      expect(out).toBe("before [REDACTED] middle [REDACTED] after");
    }
    const { out } = await run(text.split(""), [secret]);
    expect(out).toBe("before [REDACTED] middle [REDACTED] after");
  });

  it("holds nothing back when no secret could be starting", async () => {
    const scrubber = new EchoScrubber(["tok_ABCDEFGHIJ"]);
    const first = new Promise<Buffer>((resolve) => scrubber.once("data", resolve));
    scrubber.write(Buffer.from("data: first event\n\n"));
    expect((await first).toString()).toBe("data: first event\n\n");
  });

  it("handles multi-byte secrets and header values", async () => {
    expect((await run(["pré", "fix-ünï", "code"], ["fix-ünï"])).out).toBe("pré[REDACTED]code");
    expect(scrubHeaderValues(["X-Echo", "Bearer abc123", "X-Other", "fine"], ["abc123"])).toEqual(["X-Echo", "Bearer [REDACTED]", "X-Other", "fine"]);
    // A secret in a field's name (an upstream that reflects it there) takes the field with it.
    expect(scrubHeaderValues(["x-echo-sk-live-0123456789", "1", "X-Other", "fine"], ["sk-live-0123456789"])).toEqual(["X-Other", "fine"]);
    // Whatever the case: h2 sends names in lower case, and an AWS key id is upper case.
    expect(scrubHeaderValues(["x-akiaiosfodnn7example", "1", "X-Other", "fine"], ["AKIAIOSFODNN7EXAMPLE"])).toEqual(["X-Other", "fine"]);
  });

  it("finds a secret written with HTML character references (an error page that echoes the request), in bodies, headers and logs", async () => {
    const secret = "aws/Se+cret=Key/0123";
    const spellings = [
      "aws&#x2F;Se&#x2B;cret&#x3D;Key&#x2F;0123", // escape-html style
      "aws&#47;Se&#43;cret&#61;Key&#047;0123", // decimal, one with a leading zero
      "aws&sol;Se&plus;cret&equals;Key&sol;0123", // HTML5 names
      "aws&#X2f;Se+cret%3DKey/0123", // mixed with the other encodings
      "aws&#x0002F;Se&lowbar;cret&#0061;Key&sol;0123".replace("&lowbar;", "&plus;"), // zero-padded, the widest spellings
    ];
    const scrubber = new Scrubber();
    scrubber.add(secret);
    for (const spelling of spellings) {
      expect(scrubText(`<p>${spelling}</p>`, [secret])).toBe("<p>[REDACTED]</p>");
      expect(scrubHeaderValues(["X-Echo", spelling], [secret])).toEqual(["X-Echo", "[REDACTED]"]);
      expect(scrubber.scrub(`{"note":"${spelling}"}`)).toBe('{"note":"[REDACTED]"}');
      // Split anywhere across two chunks of a streamed body.
      for (const cut of [4, 9, 13, 15, spelling.length - 2]) {
        const echo = new EchoScrubber([secret]);
        const out: Buffer[] = [];
        echo.on("data", (chunk: Buffer) => out.push(chunk));
        const done = new Promise((resolve) => echo.on("end", resolve));
        echo.write(Buffer.from(`x ${spelling.slice(0, cut)}`));
        echo.end(Buffer.from(`${spelling.slice(cut)} y`));
        await done;
        expect(Buffer.concat(out).toString()).toBe("x [REDACTED] y");
      }
    }
    // Ordinary ampersands are left alone.
    expect(scrubber.scrub('{"path":"/x?a=1&b=2&amp;c=3"}')).toBe('{"path":"/x?a=1&b=2&amp;c=3"}');
  });
});

describe("secret store", () => {
  it("reads env, file and command sources, names the failure without a value, and scrubs what it resolved", async () => {
    process.env.PCX_UNIT_SECRET = "env-value-123";
    const scrubber = new Scrubber();
    const store = new SecretStore(
      {
        fromEnv: { env: "PCX_UNIT_SECRET" },
        missingEnv: { env: "PCX_UNIT_SECRET_UNSET" },
        fromCommand: { command: "printf 'cmd-value-456\\n'" },
        failingCommand: { command: "echo leaked-output; exit 3" },
        missingFile: { file: "/nonexistent/secret" },
      },
      scrubber,
    );
    expect(await store.resolve("fromEnv")).toBe("env-value-123");
    expect(await store.resolve("fromCommand")).toBe("cmd-value-456");
    await expect(store.resolve("missingEnv")).rejects.toThrow(/PCX_UNIT_SECRET_UNSET is not set/);
    const commandError = (await store.resolve("failingCommand").catch((e: Error) => e)) as Error;
    expect(commandError).toBeInstanceOf(SecretUnavailable);
    expect(commandError.message).toMatch(/exited with 3/);
    expect(commandError.message).not.toContain("leaked-output");
    await expect(store.resolve("missingFile")).rejects.toThrow(/cannot read \/nonexistent\/secret \(ENOENT\)/);
    expect(scrubber.scrub("a env-value-123 b cmd-value-456")).toBe("a [REDACTED] b [REDACTED]");
  });

  it("collapses concurrent resolutions, refreshes before expiry, keeps the last good value through a failed refresh until it expires", async () => {
    let now = 0;
    const dir = await import("node:fs/promises").then((fs) => fs.mkdtemp("/tmp/pcx-secret-"));
    const counter = `${dir}/count`;
    const value = `${dir}/value`;
    const fs = await import("node:fs/promises");
    await fs.writeFile(value, "v1");
    const store = new SecretStore({ s: { command: `echo x >> ${counter}; cat ${value}`, ttl: 10_000 } }, new Scrubber(), { now: () => now });
    const results = await Promise.all(Array.from({ length: 20 }, () => store.resolve("s")));
    expect(new Set(results)).toEqual(new Set(["v1"]));
    expect((await fs.readFile(counter, "utf8")).trim().split("\n")).toHaveLength(1);

    await fs.writeFile(value, "v2");
    now = 8_500; // past 80% of the ttl: served from cache, refreshed in the background
    expect(await store.resolve("s")).toBe("v1");
    await expect.poll(() => store.resolve("s")).toBe("v2");
    // The value it replaced is still known: a rotated token stays valid a while, and an upstream may have stored it.
    expect(store.known("s")).toEqual(["v2", "v1"]);
    // A reload's new store knows them too, before it resolves anything itself.
    const reloaded = new SecretStore({ s: { command: `cat ${value}`, ttl: 10_000 } }, new Scrubber(), { now: () => now });
    reloaded.rememberFrom(store);
    expect(reloaded.known("s")).toEqual(["v2", "v1"]);

    await fs.rm(value);
    now = 8_500 + 9_000; // refresh fails: the last good value is still served until it expires
    expect(await store.resolve("s")).toBe("v2");
    now = 8_500 + 10_500;
    await expect(store.resolve("s")).rejects.toBeInstanceOf(SecretUnavailable);
  });
});

describe("proxy identities", () => {
  process.env.PCX_UNIT_T1 = "token-one-aaaa";
  process.env.PCX_UNIT_T2 = "token-two-bbbb";
  const store = new SecretStore({ [tokenSecretName("agent-1")]: { env: "PCX_UNIT_T1" }, [tokenSecretName("agent-2")]: { env: "PCX_UNIT_T2" } }, new Scrubber());
  const identities = new Identities([{ name: "agent-1", token: { env: "PCX_UNIT_T1" } }, { name: "agent-2", token: { env: "PCX_UNIT_T2" } }], store);
  const basic = (text: string) => `Basic ${Buffer.from(text).toString("base64")}`;
  it.each([
    [basic("agent-1:token-one-aaaa"), "agent-1"],
    [basic("agent-2:token-two-bbbb"), "agent-2"],
    ["Bearer token-two-bbbb", "agent-2"],
    ["bearer token-one-aaaa", "agent-1"],
    [basic("agent-1:token-two-bbbb"), undefined],
    [basic("nobody:token-one-aaaa"), undefined],
    [basic("agent-1"), undefined],
    ["Bearer wrong", undefined],
    ["Digest abc", undefined],
    [undefined, undefined],
  ])("%s -> %s", async (header, client) => {
    const result = await identities.authenticate(header);
    if (client) expect(result).toEqual({ ok: true, client });
    else expect(result.ok).toBe(false);
  });
});

describe("the proxy's own listener", () => {
  it("is refused as a destination whatever allow_ips says", () => {
    const guard = new DestinationGuard("deny", ["127.0.0.0/8"], { host: "127.0.0.1", port: 8080 });
    expect(guard.checkSelf("127.0.0.1", 8080)).toMatch(/own listener/);
    expect(guard.checkSelf("localhost", 8080)).toMatch(/own listener/);
    expect(guard.checkSelf("0.0.0.0", 8080)).toMatch(/own listener/);
    expect(guard.checkSelf("127.0.0.1", 8081)).toBeUndefined();
    expect(guard.checkSelf("example.com", 8080)).toBeUndefined();
  });
});

describe("secret spellings", () => {
  it("scrubs a secret in every common encoding, raw and at any base64 offset", () => {
    const secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY!EXAMPLE~KEY";
    const spelled = [
      secret,
      JSON.stringify(secret),
      JSON.stringify(secret).replace(/\//g, "\\/"),
      encodeURIComponent(secret),
      encodeURIComponent(secret).replace(/%[0-9A-F]{2}/g, (e) => e.toLowerCase()),
      "wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCY%21EXAMPLE~KEY",
      encodeURIComponent(encodeURIComponent(secret)),
      Buffer.from(secret).toString("hex"),
      Buffer.from(secret).toString("base64"),
      Buffer.from(`Bearer ${secret}`).toString("base64"),
      Buffer.from(`x${secret}`).toString("base64url"),
      Buffer.from(`xy${secret}`).toString("base64"),
    ];
    for (const text of spelled) {
      const scrubbed = scrubText(`before ${text} after`, [secret]);
      expect(scrubbed).toContain("[REDACTED]");
      // What remains cannot give the secret back: at most a couple of bytes at each end of a base64 run.
      expect(scrubbed).not.toContain(secret.slice(4, -4));
      expect(Buffer.from(scrubbed.replace(/^before |after$/g, ""), "base64").toString("latin1")).not.toContain(secret.slice(4, -4));
    }
    const logScrubber = new Scrubber();
    logScrubber.add(secret);
    expect(logScrubber.scrub(`x ${Buffer.from(`Bearer ${secret}`).toString("base64")} y`)).toContain("[REDACTED]");
  });
});
