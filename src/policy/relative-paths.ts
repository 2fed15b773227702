import { isAbsolute, resolve } from "node:path";
import type { Policy, SecretSource } from "./schema.js";

function absolute(baseDir: string, path: string): string {
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

function withAbsoluteFile<T extends SecretSource | undefined>(baseDir: string, source: T): T {
  if (!source || source.file === undefined) return source;
  return { ...source, file: absolute(baseDir, source.file) };
}

/**
 * The policy with every file path it names made absolute against the policy file's folder
 * (SPEC section 12): ca.dir, log.audit, upstream.trust and each secret `file:` source, the
 * clients' tokens and any admin token included. A policy means the same files wherever
 * the proxy is started from.
 */
export function resolvePolicyPaths(policy: Policy, baseDir: string): Policy {
  const admin = policy.admin as Policy["admin"] & { token?: SecretSource };
  return {
    ...policy,
    ca: { ...policy.ca, dir: absolute(baseDir, policy.ca.dir) },
    log: { ...policy.log, audit: policy.log.audit === "-" ? "-" : absolute(baseDir, policy.log.audit) },
    upstream: { ...policy.upstream, trust: policy.upstream.trust.map((file) => absolute(baseDir, file)) },
    secrets: Object.fromEntries(Object.entries(policy.secrets).map(([name, source]) => [name, withAbsoluteFile(baseDir, source)])),
    clients: policy.clients.map((client) => ({ ...client, token: withAbsoluteFile(baseDir, client.token) })),
    admin: admin.token ? ({ ...admin, token: withAbsoluteFile(baseDir, admin.token) } as Policy["admin"]) : policy.admin,
  };
}
