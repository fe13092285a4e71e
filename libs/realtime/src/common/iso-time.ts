const DAY_MS = 86_400_000;
/** 10000-01-01T00:00:00.000Z: from there on `toISOString` writes a six-digit year. */
const YEAR_10000_MS = 253_402_300_800_000;

/** 'YYYY-MM-DDT' by day number since the epoch: a change's dates fall on a few days. */
const dayPrefixes = new Map<number, string>();
const MAX_DAYS = 256;

function pad2(n: number): string {
  return n < 10 ? `0${n}` : `${n}`;
}

/**
 * `new Date(ms).toISOString()`, the same string, in about a sixth of the time: V8 formats a
 * date through `snprintf`, about 0.8 µs a call here, and the change path formats several
 * per write (every date column of the before and after images, the change's timestamp).
 * The day's part comes from a small cache, the time of day from integer arithmetic. Outside
 * 1970–9999 (and for NaN, which throws RangeError as `toISOString` does) it is V8's own.
 */
export function isoTime(time: number): string {
  // a Date holds whole milliseconds (new Date(1.5) is 1 ms)
  const ms = Math.trunc(time);
  if (!(ms >= 0 && ms < YEAR_10000_MS)) return new Date(ms).toISOString();
  const day = Math.floor(ms / DAY_MS);
  let prefix = dayPrefixes.get(day);
  if (prefix === undefined) {
    if (dayPrefixes.size >= MAX_DAYS) dayPrefixes.clear();
    prefix = new Date(day * DAY_MS).toISOString().slice(0, 11);
    dayPrefixes.set(day, prefix);
  }
  let rest = ms - day * DAY_MS;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const s = Math.floor(rest / 1000);
  rest -= s * 1000;
  const milli = rest < 10 ? `00${rest}` : rest < 100 ? `0${rest}` : `${rest}`;
  return `${prefix}${pad2(h)}:${pad2(m)}:${pad2(s)}.${milli}Z`;
}

/** `date.toISOString()` through isoTime. */
export function isoDate(date: Date): string {
  return isoTime(date.getTime());
}
