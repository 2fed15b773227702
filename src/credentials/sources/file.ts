import { readFile } from "node:fs/promises";
import { SourceFailed, type SecretSourceReader } from "./source.js";

/** Reads a secret file: the value is its text without one trailing line break. */
export async function readSecretFile(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new SourceFailed(`cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? "error"})`);
  }
  const value = text.replace(/\r?\n$/, "");
  if (value === "") throw new SourceFailed(`${file} is empty`);
  return value;
}

/** A file, re-read every ttl (30 s by default) so a rotated file is picked up without a restart. */
export function fileSource(file: string): SecretSourceReader {
  return {
    description: `file ${file}`,
    defaultTtlMs: 30_000,
    async read() {
      return { value: await readSecretFile(file) };
    },
  };
}
