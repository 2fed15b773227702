const UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };
const WINDOW = /^(\d+)(m|h|d|w)$/;

/** A budget window ("30m", "1h", "1d", "7d", "1w") in milliseconds; undefined when malformed. */
export function parseWindow(text: string): number | undefined {
  const match = WINDOW.exec(text.trim());
  if (!match || Number(match[1]) === 0) return undefined;
  return Number(match[1]) * UNIT_MS[match[2]!]!;
}

/**
 * The fixed window that holds `now`: windows are whole multiples of their length counted from
 * the Unix epoch, so a day starts at 00:00 UTC and an hour on the hour (a week on a Thursday,
 * the epoch's weekday).
 */
export function windowAt(now: number, lengthMs: number): { start: number; end: number } {
  const start = Math.floor(now / lengthMs) * lengthMs;
  return { start, end: start + lengthMs };
}
