import { isoDate, isoTime } from './iso-time';

describe('isoTime', () => {
  it('writes what Date#toISOString writes, for every kind of instant in 1970–9999', () => {
    const instants = [
      0,
      1,
      999,
      1000,
      59_999,
      60_000,
      3_599_999,
      86_399_999, // the last millisecond of a day
      86_400_000,
      951_782_400_000, // 2000-02-29
      4_107_542_399_999, // 2100-02-28T23:59:59.999Z (2100 is no leap year)
      4_107_542_400_000,
      253_402_300_799_999, // the last millisecond of 9999
      Date.UTC(2026, 11, 7, 9, 5, 3, 7),
    ];
    // a seeded walk over the whole range, so that a failure names an instant that repeats
    let x = 0x9e3779b9;
    for (let i = 0; i < 20_000; i++) {
      x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
      instants.push(Math.floor((x / 2 ** 32) * 253_402_300_800_000));
    }
    for (const ms of instants) expect([ms, isoTime(ms)]).toEqual([ms, new Date(ms).toISOString()]);
  });

  it('outside 1970–9999 it is toISOString itself: before the epoch, six-digit years, and a RangeError for an invalid date', () => {
    for (const ms of [-1, -86_400_001, -62_198_755_200_000, 253_402_300_800_000, 8.64e15]) {
      expect(isoTime(ms)).toBe(new Date(ms).toISOString());
    }
    expect(() => isoTime(Number.NaN)).toThrow(RangeError);
    // a Date's time is whole milliseconds: fractions are dropped as new Date() drops them
    for (const ms of [0.5, 1.5, 1e-300, 999.999, 86_399_999.9, -0.5, -1.5]) {
      expect([ms, isoTime(ms)]).toEqual([ms, new Date(ms).toISOString()]);
    }
    expect(() => isoDate(new Date('not a date'))).toThrow(RangeError);
  });

  it('isoDate formats a Date', () => {
    const d = new Date(Date.UTC(2031, 0, 2, 3, 4, 5, 60));
    expect(isoDate(d)).toBe('2031-01-02T03:04:05.060Z');
  });
});
