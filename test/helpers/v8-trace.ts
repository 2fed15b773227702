/** One old-generation limit V8 computed, from its --trace-gc-verbose output. */
export interface HeapLimit {
  /** The factor V8 computed for itself ("[HeapController] factor X based on …"). */
  own: number;
  oldKiB: number;
  limitKiB: number;
  /** The factor the limit was computed with (the command line's or --heap-growing-percent's, when set). */
  used: number;
}

/** The limits in a --trace-gc-verbose output, by isolate (every thread with V8 in it prints: tsx's loader, workers). */
export function heapLimitsByIsolate(trace: string): Map<string, HeapLimit[]> {
  const byIsolate = new Map<string, HeapLimit[]>();
  const own = new Map<string, number>();
  for (const line of trace.split("\n")) {
    const isolate = /^\[\d+:(0x[0-9a-f]+)\]/.exec(line)?.[1];
    if (!isolate) continue;
    const factor = /\[HeapController\] factor ([\d.]+) based on/.exec(line);
    if (factor) own.set(isolate, Number(factor[1]));
    const limit = /\[HeapController\] Limit: old size: (\d+) KB, new limit: (\d+) KB \(([\d.]+)\)/.exec(line);
    if (!limit) continue;
    const list = byIsolate.get(isolate) ?? byIsolate.set(isolate, []).get(isolate)!;
    list.push({ own: own.get(isolate) ?? NaN, oldKiB: Number(limit[1]), limitKiB: Number(limit[2]), used: Number(limit[3]) });
  }
  return byIsolate;
}

/** The environment without PORTCULLIS_HEAP_HEADROOM_MIB (a developer's own setting must not change a test's). */
export function envWithoutHeadroom(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.PORTCULLIS_HEAP_HEADROOM_MIB;
  return { ...env, ...extra };
}
