// Why a relay needs this: V8 counts every ArrayBuffer allocated since its last full collection
// against the old generation's limit (Node 20's V8 11.3, `OldGenerationSpaceAvailable`; newer V8
// calls this "historic behavior", chromium:42203776), and after every scavenge it starts a full
// collection once the room left is at most one young generation. A relayed body allocates two
// 16 KiB ArrayBuffers a chunk (the TLS read, the HTTP parser's copy) that die young, but they
// still count until swept. Once keep-alive traffic has grown the young generation to its maximum,
// V8's own limit (here: the live size plus 8 MiB plus one young generation) is spent by every
// scavenge of a bulk download: a full collection every ~100 ms, about twice the CPU a MiB.
//
// So `portcullis start` sets V8's growing factor after every full collection so that the next
// limit is HEADROOM_BYTES above the live old generation, within V8's largest factor (4×). It
// hands the factor back to V8 once V8's own smallest one (1.1×) gives that room anyway, and once
// the live heap is half of V8's heap limit, where V8's memory-saving growth should decide.
// V8 computes a limit at the end of a full collection, before the observer runs, so the factor
// set from one collection's live size applies at the next one.
// V8 flags belong to the whole process, so createProxy leaves them alone: `portcullis start` calls
// this, and a program that embeds createProxy and does nothing else can call it too.
import { constants, PerformanceObserver, type NodeGCPerformanceDetail, type PerformanceEntry } from "node:perf_hooks";
import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from "node:v8";

/** The room kept above the live heap before the next full collection, unless the heap limit is small. */
export const HEADROOM_BYTES = 64 * 1024 * 1024;
/** At most this share of V8's heap limit is kept as headroom (a small container's heap gets less). */
const HEAP_LIMIT_SHARE = 1 / 8;
/** V8's largest growing factor (4×), as --heap-growing-percent. */
const MAX_PERCENT = 300;
/** V8's smallest growing factor (1.1×): at or below it, V8's own factor gives the room already. */
const V8_MIN_PERCENT = 10;
/** From this share of the heap limit on, V8's own (memory-saving) growth decides. */
const NEAR_HEAP_LIMIT = 1 / 2;

/**
 * V8's --heap-growing-percent that leaves `headroomBytes` above an old generation of `liveBytes`,
 * capped at V8's largest factor; 0 (V8's own factor) where V8's smallest one leaves that room.
 */
export function growingPercent(liveBytes: number, headroomBytes: number): number {
  if (headroomBytes <= 0) return 0;
  const percent = Math.ceil((headroomBytes / Math.max(liveBytes, 1)) * 100);
  return percent <= V8_MIN_PERCENT ? 0 : Math.min(MAX_PERCENT, percent);
}

/** The headroom for a process whose V8 heap may reach `heapLimitBytes`. */
export function headroomFor(heapLimitBytes: number, wantedBytes = HEADROOM_BYTES): number {
  return Math.min(wantedBytes, Math.floor(heapLimitBytes * HEAP_LIMIT_SHARE));
}

/** PORTCULLIS_HEAP_HEADROOM_MIB: whole MiB, 0 for V8's own growing factor; unset for HEADROOM_BYTES. */
export function headroomFromEnv(value: string | undefined): number {
  if (value === undefined || value === "") return HEADROOM_BYTES;
  if (!/^\d{1,5}$/.test(value)) throw new Error(`PORTCULLIS_HEAP_HEADROOM_MIB must be a whole number of MiB (0 turns the headroom off), not ${JSON.stringify(value)}`);
  return Number(value) * 1024 * 1024;
}

/** Whether the node command line already chose the growing factor, which is then left alone. */
export function growthChosenBy(execArgv: readonly string[]): boolean {
  return execArgv.some((arg) => /^--?heap[-_]growing[-_]percent(=|$)/.test(arg));
}

/** A "gc" entry's detail (Node sets it; its types do not say so). */
export function isFullCollection(entry: PerformanceEntry): boolean {
  return (entry as PerformanceEntry & { detail?: NodeGCPerformanceDetail }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR;
}

/** The old generation's size as V8's limit sees it: every space but the young and read-only ones. */
function oldGenerationBytes(): number {
  let bytes = 0;
  for (const space of getHeapSpaceStatistics()) {
    if (!space.space_name.startsWith("new_") && space.space_name !== "read_only_space") bytes += space.space_used_size;
  }
  return bytes;
}

/**
 * Keeps the growing factor in step with the live heap for as long as the process runs: set now,
 * and again after each full collection. `headroomBytes` 0 leaves V8's own factor. Returns a
 * function that stops the observer and gives V8 its own factor back.
 */
export function keepHeapHeadroom(options: { headroomBytes?: number; execArgv?: readonly string[] } = {}): () => void {
  const wanted = options.headroomBytes ?? HEADROOM_BYTES;
  if (wanted <= 0 || growthChosenBy(options.execArgv ?? process.execArgv)) return () => {};
  const heapLimit = getHeapStatistics().heap_size_limit;
  const headroom = headroomFor(heapLimit, wanted);
  let current = 0;
  const set = (percent: number) => {
    if (percent === current) return;
    setFlagsFromString(`--heap-growing-percent=${percent}`);
    current = percent;
  };
  const update = () => {
    const live = oldGenerationBytes();
    set(live >= heapLimit * NEAR_HEAP_LIMIT ? 0 : growingPercent(live, headroom));
  };
  update();
  const observer = new PerformanceObserver((list) => {
    if (list.getEntries().some(isFullCollection)) update();
  });
  observer.observe({ entryTypes: ["gc"] });
  return () => {
    observer.disconnect();
    set(0);
  };
}
