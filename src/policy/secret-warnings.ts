import { accessSync, constants, statSync } from "node:fs";
import type { Policy, SecretSource } from "./schema.js";

export interface SecretWarning {
  /** Where the source is in the policy, for a FILE:LINE:COL position. */
  path: (string | number)[];
  message: string;
}

/** Why a source cannot give a value now, or undefined when it can (commands are not run: they may have effects). */
function problem(source: SecretSource): string | undefined {
  if (source.env !== undefined) return process.env[source.env] ? undefined : `environment variable ${source.env} is not set`;
  if (source.file !== undefined) {
    try {
      accessSync(source.file, constants.R_OK);
      if (statSync(source.file).size === 0) return `${source.file} is empty`;
    } catch (error) {
      return `cannot read ${source.file} (${(error as NodeJS.ErrnoException).code ?? "error"})`;
    }
  }
  return undefined;
}

/**
 * Secrets that could not be resolved if a request needed them now. A warning, not an error:
 * the proxy starts without them (SPEC section 3) and answers 502 credential_unavailable
 * only for the requests that need them.
 */
export function secretWarnings(policy: Policy): SecretWarning[] {
  const warnings: SecretWarning[] = [];
  for (const [name, source] of Object.entries(policy.secrets)) {
    const why = problem(source);
    if (why) warnings.push({ path: ["secrets", name], message: `secret "${name}" cannot be resolved now: ${why}` });
  }
  policy.clients.forEach((client, index) => {
    const why = problem(client.token);
    if (why) warnings.push({ path: ["clients", index, "token"], message: `token of client "${client.name}" cannot be resolved now: ${why}` });
  });
  const adminToken = (policy.admin as { token?: SecretSource }).token;
  const why = adminToken && problem(adminToken);
  if (why) warnings.push({ path: ["admin", "token"], message: `admin.token cannot be resolved now: ${why}` });
  return warnings;
}
