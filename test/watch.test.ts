import { mkdirSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { watchFile } from "../src/policy/watch.js";
import { tempDir } from "./helpers/pki.js";

function changes(file: string): { count: () => number; stop: () => void; next: () => Promise<void> } {
  let count = 0;
  let waiting: (() => void) | undefined;
  const watch = watchFile(file, () => {
    count++;
    waiting?.();
  });
  return { count: () => count, stop: () => watch.stop(), next: () => new Promise<void>((resolve) => (waiting = resolve)) };
}

describe("policy file watch", () => {
  it("sees a file replaced by rename (editors)", async () => {
    const dir = tempDir("watch");
    const file = join(dir, "policy.yaml");
    writeFileSync(file, "version: 1\n");
    const watcher = changes(file);
    try {
      const first = watcher.next();
      writeFileSync(join(dir, ".policy.yaml.swp"), "version: 1\n# edited\n");
      renameSync(join(dir, ".policy.yaml.swp"), file);
      await first;
      expect(watcher.count()).toBe(1);
    } finally {
      watcher.stop();
    }
  });

  it("sees a Kubernetes ConfigMap update (the ..data symlink swapped)", async () => {
    const dir = tempDir("watch-k8s");
    mkdirSync(join(dir, "..2026_11_22_v1"));
    writeFileSync(join(dir, "..2026_11_22_v1", "policy.yaml"), "version: 1\n");
    symlinkSync("..2026_11_22_v1", join(dir, "..data"));
    symlinkSync("..data/policy.yaml", join(dir, "policy.yaml"));
    const watcher = changes(join(dir, "policy.yaml"));
    try {
      const changed = watcher.next();
      mkdirSync(join(dir, "..2026_11_22_v2"));
      writeFileSync(join(dir, "..2026_11_22_v2", "policy.yaml"), "version: 1\n# new rules\n");
      symlinkSync("..2026_11_22_v2", join(dir, "..data_tmp"));
      renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
      await changed;
      expect(watcher.count()).toBe(1);
    } finally {
      watcher.stop();
    }
  });
});
