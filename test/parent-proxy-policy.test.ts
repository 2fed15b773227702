import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parsePolicy, PolicyInvalidError } from "../src/policy/load.js";
import { NoProxy } from "../src/policy/parent-proxy.js";
import { explain } from "../src/proxy/explain.js";
import { assertBuilt, runCli } from "./helpers/cli.js";
import { tempDir } from "./helpers/pki.js";

function upstreamOf(section: string) {
  return parsePolicy(`version: 1\nupstream:\n${section}\n`, "p.yaml").policy.upstream;
}

function errorsOf(section: string): string[] {
  try {
    parsePolicy(`version: 1\nupstream:\n${section}\n`, "p.yaml");
  } catch (error) {
    if (error instanceof PolicyInvalidError) return error.errors.map((e) => `${e.line}:${e.col}: ${e.message}`);
    throw error;
  }
  return [];
}

describe("upstream.proxy and upstream.no_proxy in the policy", () => {
  it("reads the URL form, credentials percent-decoded, and the object form with a secret source", () => {
    expect(upstreamOf("  proxy: http://bob:p%40ss%3Aword@proxy.corp:3128").proxy).toEqual({ host: "proxy.corp", port: 3128, username: "bob", password: "p@ss:word" });
    expect(upstreamOf("  proxy: http://[::1]:8080/").proxy).toEqual({ host: "::1", port: 8080 });
    expect(upstreamOf("  proxy: http://proxy.corp:80").proxy).toEqual({ host: "proxy.corp", port: 80 });
    expect(upstreamOf("  proxy: { url: http://proxy.corp:3128, username: bob, password: { file: /run/secrets/proxy } }").proxy).toEqual({
      host: "proxy.corp",
      port: 3128,
      username: "bob",
      password: { file: "/run/secrets/proxy" },
    });
    expect(upstreamOf("  proxy: { url: 'http://bob@proxy.corp:3128', password: { env: PROXY_PASSWORD } }").proxy).toMatchObject({ username: "bob", password: { env: "PROXY_PASSWORD" } });
    expect(upstreamOf("  trust: []").proxy).toBeUndefined();
    expect(upstreamOf("  trust: []").no_proxy).toEqual([]);
  });

  it("refuses what is not http://[user:pass@]HOST:PORT with the reason and the position, never echoing a password", () => {
    expect(errorsOf("  proxy: https://proxy.corp:3128")).toEqual([expect.stringMatching(/^3:10: upstream\.proxy: a parent proxy reached over TLS \(https:\/\/\) is not supported/)]);
    expect(errorsOf("  proxy: socks5://proxy.corp:1080")).toEqual(['3:10: upstream.proxy: expected "http://[user:pass@]HOST:PORT": the scheme must be http']);
    expect(errorsOf("  proxy: http://proxy.corp")).toEqual(['3:10: upstream.proxy: expected "http://[user:pass@]HOST:PORT": the port is required']);
    expect(errorsOf("  proxy: http://proxy.corp:3128/path")).toEqual(['3:10: upstream.proxy: expected "http://[user:pass@]HOST:PORT": no path, query or fragment']);
    const garbled = errorsOf("  proxy: 'http://bob:hunter2-secret@'");
    expect(garbled).toHaveLength(1);
    expect(garbled[0]).not.toContain("hunter2-secret");
    // A raw password with a "/" in it (base64 has them) makes the URL unparsable: still never echoed.
    const slashed = errorsOf("  proxy: 'http://corp:S3cr3t/Pa55@proxy.corp:3128'");
    expect(slashed).toHaveLength(1);
    expect(slashed[0]).not.toContain("S3cr3t");
    expect(slashed[0]).not.toContain("Pa55");
    expect(errorsOf("  proxy: { url: 'http://bob:one@proxy.corp:3128', password: { env: P } }")).toEqual(["3:10: upstream.proxy: the password is given twice: in the url and as password"]);
    expect(errorsOf("  proxy: { url: 'http://proxy.corp:3128', password: { env: P, file: /x } }")).toEqual(["3:53: upstream.proxy.password: expected exactly one of env, file, command, github_app, oauth2 or vault (got env, file)"]);
    expect(errorsOf("  proxy: { url: 'http://proxy.corp:3128', pasword: { env: P } }")).toEqual([
      "3:10: upstream.proxy.password: Invalid input: expected object, received undefined",
      '3:43: upstream.proxy.pasword: unknown key "pasword" (did you mean "password"?)',
    ]);
    expect(errorsOf("  no_proxy: ['10.0.0.0/33', 'a b', '*.ok.test', .ok.test, '*', '::1', 192.168.0.0/16]")).toEqual([
      '3:14: upstream.no_proxy.0: "10.0.0.0/33" is not a valid CIDR',
      '3:29: upstream.no_proxy.1: "a b" is not a host name, "*.suffix", ".suffix", IP address, CIDR or "*"',
    ]);
  });

  it("matches no_proxy like curl's NO_PROXY, with portcullis' host patterns", () => {
    const noProxy = new NoProxy(["exact.test", "*.sub.test", ".dot.test", "10.0.0.0/8", "::1", "192.0.2.7"]);
    expect(noProxy.bypasses("exact.test")).toBe(true);
    expect(noProxy.bypasses("a.exact.test")).toBe(false);
    expect(noProxy.bypasses("a.sub.test")).toBe(true);
    expect(noProxy.bypasses("sub.test")).toBe(false);
    expect(noProxy.bypasses("dot.test")).toBe(true);
    expect(noProxy.bypasses("x.y.dot.test")).toBe(true);
    expect(noProxy.bypasses("notdot.test")).toBe(false);
    expect(noProxy.bypasses("10.1.2.3")).toBe(true);
    expect(noProxy.bypasses("11.1.2.3")).toBe(false);
    expect(noProxy.bypasses("::1")).toBe(true);
    expect(noProxy.bypasses("192.0.2.7")).toBe(true);
    // A name upstream.resolve maps into a listed network bypasses too.
    expect(noProxy.bypasses("internal.test", "10.9.9.9")).toBe(true);
    expect(noProxy.bypasses("internal.test", "172.16.0.1")).toBe(false);
    expect(new NoProxy(["*"]).bypasses("anything.test")).toBe(true);
    expect(new NoProxy([]).bypasses("anything.test")).toBe(false);
  });

  it("explain says which way a request would leave", async () => {
    const { policy } = parsePolicy(
      [
        "version: 1",
        "upstream:",
        "  proxy: http://bob:never-printed-9f@proxy.corp:3128",
        "  no_proxy: [internal.test]",
        "  resolve: { mapped.test: 203.0.113.9, internal.test: 203.0.113.10 }",
        "network: { default: allow }",
      ].join("\n"),
      "p.yaml",
    );
    const routes = await Promise.all(
      ["https://mapped.test/x", "http://mapped.test/x", "https://internal.test/x"].map(async (url) => (await explain(policy, "GET", url, null)).route),
    );
    expect(routes).toEqual([
      "through the parent proxy proxy.corp:3128: CONNECT 203.0.113.9:443",
      "through the parent proxy proxy.corp:3128: the request in absolute form",
      "direct: upstream.no_proxy lists internal.test, bypassing the parent proxy proxy.corp:3128",
    ]);
    expect(JSON.stringify(await explain(policy, "GET", "https://mapped.test/x", null))).not.toContain("never-printed-9f");
  });

  it("portcullis check reports a bad parent proxy as FILE:LINE:COL", () => {
    assertBuilt();
    const file = join(tempDir("parent-check"), "p.yaml");
    writeFileSync(file, "version: 1\nupstream:\n  proxy: ftp://proxy.corp:21\n  no_proxy: [10.0.0.0/40]\n");
    const { status, stderr } = runCli(["check", "--policy", file]);
    expect(status).toBe(1);
    expect(stderr).toContain(`${file}:3:10: upstream.proxy: expected "http://[user:pass@]HOST:PORT": the scheme must be http`);
    expect(stderr).toContain(`${file}:4:14: upstream.no_proxy.0: "10.0.0.0/40" is not a valid CIDR`);
  });
});
