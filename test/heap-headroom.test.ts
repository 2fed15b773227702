import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { growingPercent, growthChosenBy, HEADROOM_BYTES } from "../src/proxy/heap-headroom.js";

// Why: src/proxy/heap-headroom.ts. A bulk download with V8's own limit ran a full collection every
// scavenge (test/gc-retention.test.ts has the download; bench/RESULTS.md the CPU it cost).

const MiB = 1024 * 1024;

describe("the growing factor for a live heap", () => {
  it("leaves at least 64 MiB of room, and at least the live size, within V8's own largest factor", () => {
    expect(HEADROOM_BYTES).toBe(64 * MiB);
    expect(growingPercent(0)).toBe(300);
    expect(growingPercent(10 * MiB)).toBe(300);
    expect(growingPercent(32 * MiB)).toBe(200);
    expect(growingPercent(40 * MiB)).toBe(160);
    expect(growingPercent(64 * MiB)).toBe(100);
    expect(growingPercent(1024 * MiB)).toBe(100);
    for (const live of [1, 5 * MiB, 21.4 * MiB, 22 * MiB, 50 * MiB, 63 * MiB, 300 * MiB]) {
      const percent = growingPercent(live);
      expect(Number.isInteger(percent)).toBe(true);
      expect(live * (percent / 100)).toBeGreaterThanOrEqual(Math.min(HEADROOM_BYTES, live * 3));
      expect(percent).toBeGreaterThanOrEqual(100);
      expect(percent).toBeLessThanOrEqual(300);
    }
  });

  it("is the node command line's when it names one, in either spelling", () => {
    expect(growthChosenBy(["--heap-growing-percent=50"])).toBe(true);
    expect(growthChosenBy(["--heap_growing_percent", "50"])).toBe(true);
    expect(growthChosenBy(["--import", "tsx", "--max-old-space-size=512"])).toBe(false);
    expect(growthChosenBy(["--heap-growing-percentage=5"])).toBe(false);
  });
});

/** The growing factor of each old-generation limit V8 computed in a run of the fixture. */
function limitFactors(nodeFlags: string[]): { oldKiB: number; factor: number }[] {
  const fixture = join(import.meta.dirname, "fixtures", "heap-limits.ts");
  const run = spawnSync(process.execPath, ["--import", "tsx", "--expose-gc", "--trace-gc-verbose", ...nodeFlags, fixture], { encoding: "utf8", timeout: 60_000 });
  expect(run.status, run.stderr).toBe(0);
  return [...run.stdout.matchAll(/\[HeapController\] Limit: old size: (\d+) KB, new limit: \d+ KB \(([\d.]+)\)/g)].map((match) => ({ oldKiB: Number(match[1]), factor: Number(match[2]) }));
}

describe("V8's limits while the headroom is kept", () => {
  it("grow the old generation 4× while it is small and 2× once it is past 64 MiB", { timeout: 60_000 }, () => {
    const limits = limitFactors([]);
    expect(limits.length).toBeGreaterThanOrEqual(4);
    const small = limits.filter((limit) => limit.oldKiB < 20 * 1024);
    expect(small.length).toBeGreaterThanOrEqual(1);
    // The first limit can come before keepHeapHeadroom ran; every one after it is 4×.
    expect(small.slice(1).every((limit) => limit.factor === 4)).toBe(true);
    // The last two: the same ~110 MB live, the second computed after the first set 100%.
    const last = limits.at(-1)!;
    expect(last.oldKiB).toBeGreaterThan(90 * 1024);
    expect(last.factor).toBe(2);
  });

  it("are V8's alone when the command line chose the growing factor", { timeout: 60_000 }, () => {
    const limits = limitFactors(["--heap-growing-percent=50"]);
    expect(limits.length).toBeGreaterThanOrEqual(4);
    expect(limits.every((limit) => limit.factor === 1.5)).toBe(true);
  });
});
