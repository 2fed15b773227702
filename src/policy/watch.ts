import { watch } from "node:fs";
import { basename, dirname, resolve } from "node:path";

const DEBOUNCE_MS = 250;

/**
 * Calls onChange (debounced) when the file changes. The directory is watched, not the file:
 * editors and config managers replace files by rename, which a file watch would lose.
 */
export function watchFile(file: string, onChange: () => void): () => void {
  const absolute = resolve(file);
  const name = basename(absolute);
  let timer: NodeJS.Timeout | undefined;
  let watcher: ReturnType<typeof watch>;
  try {
    watcher = watch(dirname(absolute), { persistent: false }, (_event, changed) => {
      if (changed !== null && changed.toString() !== name) return;
      clearTimeout(timer);
      timer = setTimeout(onChange, DEBOUNCE_MS);
    });
  } catch {
    return () => undefined;
  }
  watcher.on("error", () => watcher.close());
  return () => {
    clearTimeout(timer);
    watcher.close();
  };
}
