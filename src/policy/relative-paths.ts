import { isAbsolute, resolve } from "node:path";
import type { Policy } from "./schema.js";

function absolute(baseDir: string, path: string): string {
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

/**
 * Every secret source's `file:` made absolute, however deep it sits: minted sources (github_app,
 * oauth2, vault), aws_sigv4 keys and a parent proxy's password hold sources of their own. Only
 * plain objects are walked (compiled patterns and the like are left as they are).
 */
function withAbsoluteFiles<T>(baseDir: string, value: T): T {
  if (Array.isArray(value)) return value.map((item: unknown) => withAbsoluteFiles(baseDir, item)) as T;
  if (value === null || typeof value !== "object" || Object.getPrototypeOf(value) !== Object.prototype) return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, inner]) => [key, key === "file" && typeof inner === "string" ? absolute(baseDir, inner) : withAbsoluteFiles(baseDir, inner)]),
  ) as T;
}

/**
 * The policy with every file path it names made absolute against the policy file's folder
 * (SPEC section 12): ca.dir, log.audit, upstream.trust and every secret `file:` source (named
 * secrets and the sources inside them, clients' tokens, the admin token, aws_sigv4 keys, the
 * parent proxy's password). budgets.state_file and a file admin.state go through resolveFrom. A policy means the same files wherever
 * the proxy is started from.
 */
export function resolvePolicyPaths(policy: Policy, baseDir: string): Policy {
  return {
    ...policy,
    ca: { ...policy.ca, dir: absolute(baseDir, policy.ca.dir) },
    log: { ...policy.log, audit: policy.log.audit === "-" ? "-" : absolute(baseDir, policy.log.audit) },
    upstream: { ...policy.upstream, trust: policy.upstream.trust.map((file) => absolute(baseDir, file)), proxy: withAbsoluteFiles(baseDir, policy.upstream.proxy) },
    secrets: withAbsoluteFiles(baseDir, policy.secrets),
    clients: policy.clients.map((client) => ({ ...client, token: withAbsoluteFiles(baseDir, client.token) })),
    credentials: policy.credentials.map((credential) => (credential.aws_sigv4 ? { ...credential, aws_sigv4: withAbsoluteFiles(baseDir, credential.aws_sigv4) } : credential)),
    admin: { ...policy.admin, token: withAbsoluteFiles(baseDir, policy.admin.token) },
  };
}
