import type { VaultSource } from "../../policy/secret-source-schema.js";
import { joinUrl, sendExpecting } from "./http-failure.js";
import { readPart } from "./plain.js";
import { requireFetcher, SourceFailed, type SecretSourceReader, type SourceContext, type SourceValue } from "./source.js";

/** KV version 2 reads carry no lease: a value is read again after this long unless the policy's ttl says otherwise. */
const DEFAULT_TTL_MS = 5 * 60_000;

/** One field of a HashiCorp Vault KV version 2 secret: GET {address}/v1/{path} with X-Vault-Token. */
export function vaultSource(source: VaultSource): SecretSourceReader {
  const url = joinUrl(source.address, `v1/${source.path}`);
  const what = `vault ${source.path}`;
  return {
    description: `${what} field ${source.field}`,
    defaultTtlMs: DEFAULT_TTL_MS,
    async read(context: SourceContext): Promise<SourceValue> {
      const fetcher = requireFetcher(context, what);
      const token = await readPart(what, "token", source.token, context);
      const headers: Record<string, string> = { "x-vault-token": token, accept: "application/json", "user-agent": "portcullis" };
      if (source.namespace) headers["x-vault-namespace"] = source.namespace;
      const startedAt = context.now();
      const response = await sendExpecting(fetcher, what, { method: "GET", url, headers }, (status) => status === 200);
      const answer = response.json as { data?: { data?: unknown }; lease_duration?: unknown };
      const data = answer.data?.data;
      if (typeof data !== "object" || data === null) {
        throw new SourceFailed(`${what}: the answer has no data.data (is this a KV version 2 path, "MOUNT/data/NAME"?)`);
      }
      const value = (data as Record<string, unknown>)[source.field];
      if (value === undefined || value === null) throw new SourceFailed(`${what}: the secret has no field "${source.field}"`);
      if (typeof value !== "string" && typeof value !== "number") throw new SourceFailed(`${what}: field "${source.field}" is not a string`);
      const text = String(value);
      if (text === "") throw new SourceFailed(`${what}: field "${source.field}" is empty`);
      context.conceal(text);
      const lease = typeof answer.lease_duration === "number" && answer.lease_duration > 0 ? answer.lease_duration * 1000 : undefined;
      return { value: text, expiresAt: lease === undefined ? undefined : startedAt + lease };
    },
  };
}
