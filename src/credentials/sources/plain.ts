import type { PlainSecretSource } from "../../policy/secret-source-schema.js";
import { commandSource } from "./command.js";
import { envSource } from "./env.js";
import { fileSource } from "./file.js";
import { SourceFailed, type SecretSourceReader, type SourceContext } from "./source.js";

export function plainSource(source: PlainSecretSource): SecretSourceReader {
  if (source.env !== undefined) return envSource(source.env);
  if (source.file !== undefined) return fileSource(source.file);
  if (source.secret !== undefined) return namedSecret(source.secret);
  return commandSource(source.command!);
}

/** Another named secret, with its own cache and expiry (validation rules out a cycle of them). */
function namedSecret(name: string): SecretSourceReader {
  return {
    description: `secret ${name}`,
    defaultTtlMs: 0,
    async read(context) {
      return { value: await context.resolveSecret(name) };
    },
  };
}

/**
 * Reads a value a minted source needs (a key, a client secret, a Vault token) afresh, so a
 * rotated file is used at the next mint; the value is scrubbed like the secret it mints
 * (an identifier such as a client_id is not: scrubbing it would only shred log lines).
 */
export async function readPart(what: string, part: string, source: PlainSecretSource, context: SourceContext, options: { secret: boolean } = { secret: true }): Promise<string> {
  const reader = plainSource(source);
  try {
    const { value } = await reader.read(context);
    if (options.secret) context.conceal(value);
    return value;
  } catch (error) {
    throw new SourceFailed(`${what}: ${part} (${reader.description}): ${(error as Error).message}`);
  }
}
