// Why a relay needs this: V8 counts every ArrayBuffer allocated since its last full collection
// against the old generation's limit (newer V8 calls this "historic behavior", chromium:42203776),
// and starts the next full collection once what is left is
// less than one young generation. A relayed body allocates two 16 KiB ArrayBuffers a chunk (the TLS
// read, the HTTP parser's copy) that die young, but they still count until swept. Once keep-alive
// traffic has grown the young generation to its maximum, V8's own limit (the live size plus 8 MiB
// plus one young generation) is spent by every scavenge of a bulk download. The result is a full
// collection every ~100 ms, and about twice the CPU a MiB.
//
// So `portcullis start` sets V8's growing factor after every full collection, as Go's GC does with
// GOGC=100: the next limit is at least twice the live size, and at least HEADROOM_BYTES above it.
// V8 flags belong to the whole process, so createProxy leaves them alone: `portcullis start` calls
// this, and a program that embeds createProxy and does nothing else can call it too.
import { constants, PerformanceObserver, type NodeGCPerformanceDetail, type PerformanceEntry } from "node:perf_hooks";
import { getHeapStatistics, setFlagsFromString } from "node:v8";

/** The least room above the live heap before the next full collection. */
export const HEADROOM_BYTES = 64 * 1024 * 1024;
/** Go's default GOGC: the heap may grow by its live size before the next full collection. */
const MIN_PERCENT = 100;
/** V8's own largest growing factor (4×). */
const MAX_PERCENT = 300;

/** V8's --heap-growing-percent for a heap of `liveBytes`: at least HEADROOM_BYTES of growth, and at least 100%, at most 300%. */
export function growingPercent(liveBytes: number): number {
  const forHeadroom = Math.ceil((HEADROOM_BYTES / Math.max(liveBytes, 1)) * 100);
  return Math.min(MAX_PERCENT, Math.max(MIN_PERCENT, forHeadroom));
}

/** Whether the node command line already chose the growing factor, which is then left alone. */
export function growthChosenBy(execArgv: readonly string[]): boolean {
  return execArgv.some((arg) => /^--heap[-_]growing[-_]percent(=|$)/.test(arg));
}

/** A "gc" entry's detail (Node sets it; its types do not say so). */
function isFullCollection(entry: PerformanceEntry): boolean {
  return (entry as PerformanceEntry & { detail?: NodeGCPerformanceDetail }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR;
}

/**
 * Keeps the growing factor in step with the live heap for as long as the process runs: set now,
 * and again after each full collection (which is when V8 computes its next limit from it).
 * Returns a function that stops the observer.
 */
export function keepHeapHeadroom(execArgv: readonly string[] = process.execArgv): () => void {
  if (growthChosenBy(execArgv)) return () => {};
  let current = 0;
  const update = () => {
    const percent = growingPercent(getHeapStatistics().used_heap_size);
    if (percent === current) return;
    setFlagsFromString(`--heap-growing-percent=${percent}`);
    current = percent;
  };
  update();
  const observer = new PerformanceObserver((list) => {
    if (list.getEntries().some(isFullCollection)) update();
  });
  observer.observe({ entryTypes: ["gc"] });
  return () => observer.disconnect();
}
