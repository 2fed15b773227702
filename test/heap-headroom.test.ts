import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { growingPercent, growthChosenBy, HEADROOM_BYTES, headroomFor, headroomFromEnv } from "../src/proxy/heap-headroom.js";
import { envWithoutHeadroom, heapLimitsByIsolate, type HeapLimit } from "./helpers/v8-trace.js";

// Why: src/proxy/heap-headroom.ts. A bulk download with V8's own limit ran a full collection every
// scavenge (test/gc-retention.test.ts has the download; bench/RESULTS.md the CPU it cost).

const MiB = 1024 * 1024;

describe("the growing factor for a live heap", () => {
  it("leaves the headroom above the live old generation, within V8's largest factor, and is V8's own once its smallest factor would", () => {
    expect(HEADROOM_BYTES).toBe(64 * MiB);
    expect(growingPercent(0, HEADROOM_BYTES)).toBe(300);
    expect(growingPercent(10 * MiB, HEADROOM_BYTES)).toBe(300);
    expect(growingPercent(32 * MiB, HEADROOM_BYTES)).toBe(200);
    expect(growingPercent(40 * MiB, HEADROOM_BYTES)).toBe(160);
    expect(growingPercent(64 * MiB, HEADROOM_BYTES)).toBe(100);
    expect(growingPercent(256 * MiB, HEADROOM_BYTES)).toBe(25);
    expect(growingPercent(640 * MiB, HEADROOM_BYTES)).toBe(0);
    expect(growingPercent(4096 * MiB, HEADROOM_BYTES)).toBe(0);
    expect(growingPercent(10 * MiB, 0)).toBe(0);
    for (const live of [1, 5 * MiB, 21.4 * MiB, 22 * MiB, 50 * MiB, 63 * MiB, 300 * MiB, 639 * MiB]) {
      const percent = growingPercent(live, HEADROOM_BYTES);
      expect(Number.isInteger(percent)).toBe(true);
      expect(live * (percent / 100)).toBeGreaterThanOrEqual(Math.min(HEADROOM_BYTES, live * 3));
      expect(percent).toBeGreaterThan(10);
      expect(percent).toBeLessThanOrEqual(300);
    }
  });

  it("keeps less headroom in a small heap: at most an eighth of V8's heap limit", () => {
    expect(headroomFor(4096 * MiB)).toBe(64 * MiB);
    expect(headroomFor(512 * MiB)).toBe(64 * MiB);
    expect(headroomFor(256 * MiB)).toBe(32 * MiB);
    expect(headroomFor(4096 * MiB, 16 * MiB)).toBe(16 * MiB);
  });

  it("takes PORTCULLIS_HEAP_HEADROOM_MIB in whole MiB, 0 for V8's own factor, and refuses anything else", () => {
    expect(headroomFromEnv(undefined)).toBe(HEADROOM_BYTES);
    expect(headroomFromEnv("")).toBe(HEADROOM_BYTES);
    expect(headroomFromEnv("0")).toBe(0);
    expect(headroomFromEnv("128")).toBe(128 * MiB);
    for (const bad of ["-1", "1.5", "64MiB", " 64", "999999", "off"]) expect(() => headroomFromEnv(bad), bad).toThrow(/PORTCULLIS_HEAP_HEADROOM_MIB/);
  });

  it("is the node command line's when it names one", () => {
    expect(growthChosenBy(["--heap-growing-percent=50"])).toBe(true);
    expect(growthChosenBy(["--heap_growing_percent=50"])).toBe(true);
    expect(growthChosenBy(["-heap-growing-percent=50"])).toBe(true);
    expect(growthChosenBy(["--import", "tsx", "--max-old-space-size=512"])).toBe(false);
    expect(growthChosenBy(["--heap-growing-percentage=5"])).toBe(false);
  });
});

/** The old-generation limits the fixture's main thread computed: the isolate that held ~110 MB. */
function limitsOf(nodeFlags: string[], env: NodeJS.ProcessEnv = {}): HeapLimit[] {
  const fixture = join(import.meta.dirname, "fixtures", "heap-limits.ts");
  // A fixed heap limit: the headroom is capped at an eighth of it, and V8 sizes it from the machine's memory.
  const flags = ["--import", "tsx", "--expose-gc", "--trace-gc-verbose", "--max-old-space-size=4096", ...nodeFlags];
  const run = spawnSync(process.execPath, [...flags, fixture], { encoding: "utf8", timeout: 50_000, env: envWithoutHeadroom(env) });
  expect(run.status, run.stderr).toBe(0);
  const main = [...heapLimitsByIsolate(run.stdout).values()].find((limits) => limits.some((limit) => limit.oldKiB > 90 * 1024));
  expect(main, run.stdout.slice(0, 2000)).toBeDefined();
  expect(main!.length).toBeGreaterThanOrEqual(4);
  return main!;
}

describe("V8's limits while the headroom is kept", () => {
  it("grow a small old generation 4×, and a large one by the headroom, from the size at the collection before", { timeout: 60_000 }, () => {
    const limits = limitsOf([]);
    // The first limit comes before keepHeapHeadroom ran; each later one uses the factor the
    // collection before it set.
    for (let i = 1; i < limits.length; i++) {
      if (limits[i - 1]!.oldKiB < 20 * 1024) expect(limits[i]!.used, JSON.stringify(limits)).toBe(4);
    }
    // The last two: about 110 MB live, the second limit computed from the first's size: 64 MiB
    // of room is a factor of about 1.6 (V8 prints one decimal).
    const [before, last] = limits.slice(-2) as [HeapLimit, HeapLimit];
    expect(before.oldKiB).toBeGreaterThan(90 * 1024);
    expect(last.used).toBeGreaterThanOrEqual(1.5);
    expect(last.used).toBeLessThanOrEqual(1.7);
    // V8's limit adds one young generation on top; the factor alone leaves the 64 MiB (to V8's
    // one printed decimal).
    expect(before.oldKiB * (last.used - 1)).toBeGreaterThanOrEqual(0.95 * 64 * 1024);
    expect(last.limitKiB - last.oldKiB).toBeGreaterThanOrEqual(64 * 1024);
  });

  it("are V8's own again once it is stopped", { timeout: 60_000 }, () => {
    const limits = limitsOf([], { HEAP_LIMITS_STOP: "1" });
    const last = limits.at(-1)!;
    expect(last.oldKiB).toBeGreaterThan(90 * 1024);
    expect(last.used, JSON.stringify(limits)).toBe(last.own);
    // Before the stop, the headroom's factor, not V8's own, was in force.
    expect(limits.slice(1, -1).some((limit) => limit.used !== limit.own), JSON.stringify(limits)).toBe(true);
  });

  it("are V8's own with PORTCULLIS_HEAP_HEADROOM_MIB=0", { timeout: 60_000 }, () => {
    const limits = limitsOf([], { PORTCULLIS_HEAP_HEADROOM_MIB: "0" });
    expect(limits.every((limit) => limit.used === limit.own), JSON.stringify(limits)).toBe(true);
  });

  it("are the command line's when it chose the growing factor", { timeout: 60_000 }, () => {
    const limits = limitsOf(["--heap-growing-percent=50"]);
    expect(limits.every((limit) => limit.used === 1.5), JSON.stringify(limits)).toBe(true);
  });
});
