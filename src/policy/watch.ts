import { createHash } from "node:crypto";
import { readFileSync, watch } from "node:fs";
import { dirname, resolve } from "node:path";

const DEBOUNCE_MS = 250;

function fingerprint(file: string): string | undefined {
  try {
    return createHash("sha256").update(readFileSync(file)).digest("hex");
  } catch {
    return undefined;
  }
}

/**
 * Calls onChange (debounced) when the file's content changes. The directory is watched, not
 * the file, and any event in it counts: editors replace files by rename, and Kubernetes
 * updates a mounted ConfigMap by swapping a `..data` symlink, so the file's own name may
 * never appear in an event. The content decides whether anything changed.
 */
export interface FileWatch {
  stop(): void;
  /** Takes the file as it is now as seen: call after a reload from elsewhere (SIGHUP). */
  remember(): void;
}

export function watchFile(file: string, onChange: () => void): FileWatch {
  const absolute = resolve(file);
  let last = fingerprint(absolute);
  let timer: NodeJS.Timeout | undefined;
  let watcher: ReturnType<typeof watch>;
  try {
    watcher = watch(dirname(absolute), { persistent: false }, () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        const now = fingerprint(absolute);
        if (now === undefined || now === last) return;
        last = now;
        onChange();
      }, DEBOUNCE_MS);
    });
  } catch {
    return { stop: () => undefined, remember: () => undefined };
  }
  watcher.on("error", () => watcher.close());
  return {
    stop() {
      clearTimeout(timer);
      watcher.close();
    },
    remember() {
      last = fingerprint(absolute);
    },
  };
}
