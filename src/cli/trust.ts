import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { CA_CERT_FILE } from "../ca/authority.js";
import { loadPolicyFile, resolveFrom } from "../policy/load.js";
import { javaTruststore } from "../trust/java-truststore.js";
import { DEFAULT_NO_PROXY, proxyUrlFromListen, shellExports, trustEnvironment } from "../trust/environment.js";
import { parse, UsageError } from "./args.js";

const DEFAULT_JAVA_PASSWORD = "changeit";

/** `portcullis trust`: the environment a sandbox needs, as export lines or JSON (SPEC section 12). */
export async function commandTrust(args: string[], defaultPolicy: string): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      policy: { type: "string" },
      ca: { type: "string" },
      proxy: { type: "string" },
      "no-proxy": { type: "string", default: DEFAULT_NO_PROXY },
      format: { type: "string", default: "shell" },
      "java-truststore": { type: "string" },
      "java-password": { type: "string", default: DEFAULT_JAVA_PASSWORD },
    },
    "trust",
  );
  if (positionals.length) throw new UsageError(`trust takes no arguments, got "${positionals[0]}"`, "trust");
  const format = values.format as string;
  if (format !== "shell" && format !== "json") throw new UsageError(`--format is shell or json, got "${format}"`, "trust");
  let proxyUrl = values.proxy as string | undefined;
  if (proxyUrl !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(proxyUrl);
    } catch {
      throw new UsageError(`--proxy expects a URL like http://127.0.0.1:8080, got "${proxyUrl}"`, "trust");
    }
    if (parsed.protocol !== "http:") throw new UsageError(`--proxy must be an http:// URL (portcullis listens in plain HTTP), got "${parsed.protocol}"`, "trust");
  }

  // The policy is read only for what was not given, so trust works without one when both are.
  let caFile = values.ca === undefined ? undefined : resolve(values.ca as string);
  if (caFile === undefined || proxyUrl === undefined) {
    const loaded = await loadPolicyFile((values.policy as string | undefined) ?? defaultPolicy);
    caFile ??= join(resolveFrom(loaded, loaded.policy.ca.dir), CA_CERT_FILE);
    if (proxyUrl === undefined) {
      const fromListen = proxyUrlFromListen(loaded.policy.proxy.listen);
      if (fromListen.wildcard) process.stderr.write(`portcullis: proxy.listen is ${loaded.policy.proxy.listen}; using ${fromListen.url} — pass --proxy with the address sandboxes reach\n`);
      proxyUrl = fromListen.url;
    }
  }
  if (!existsSync(caFile)) {
    process.stderr.write(`portcullis: no CA certificate at ${caFile}: create it with "portcullis init-ca" (or "start" creates it), or pass --ca FILE\n`);
    return 1;
  }
  const caPem = readFileSync(caFile, "utf8");

  let java: { truststore: string; password: string } | undefined;
  if (values["java-truststore"] !== undefined) {
    java = { truststore: resolve(values["java-truststore"] as string), password: values["java-password"] as string };
  }
  let env: Record<string, string>;
  try {
    env = trustEnvironment({ caFile, proxyUrl, noProxy: values["no-proxy"] as string, java });
    if (java) writeFileSync(java.truststore, javaTruststore([{ pem: caPem, alias: "portcullis" }], java.password), { mode: 0o644 });
  } catch (error) {
    process.stderr.write(`portcullis: ${(error as Error).message}\n`);
    return 1;
  }
  process.stdout.write(format === "json" ? `${JSON.stringify(env, null, 2)}\n` : shellExports(env));
  return 0;
}
