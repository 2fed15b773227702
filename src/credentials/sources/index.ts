import type { SecretSource } from "../../policy/secret-source-schema.js";
import { githubAppSource } from "./github-app.js";
import { oauth2Source } from "./oauth2.js";
import { plainSource } from "./plain.js";
import type { SecretSourceReader } from "./source.js";
import { vaultSource } from "./vault.js";

/** The reader for a policy's secret source; one per secret, so a source may keep state (a rotated refresh token). */
export function createSourceReader(source: SecretSource): SecretSourceReader {
  if (source.github_app) return githubAppSource(source.github_app);
  if (source.oauth2) return oauth2Source(source.oauth2);
  if (source.vault) return vaultSource(source.vault);
  return plainSource(source);
}
