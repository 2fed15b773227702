import { randomBytes } from "node:crypto";
import { chmod, rename, stat, unlink, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * Replaces a secret file's content atomically: a new file beside it (same directory, so the
 * rename cannot cross file systems) with the old file's mode, renamed over it. A reader sees
 * the old value or the new one, never half of one.
 */
export async function writeSecretFileAtomically(file: string, value: string): Promise<void> {
  const mode = await stat(file).then((info) => info.mode & 0o777, () => 0o600);
  const temporary = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    await writeFile(temporary, `${value}\n`, { mode: 0o600, flag: "wx" });
    await chmod(temporary, mode);
    await rename(temporary, file);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
}
