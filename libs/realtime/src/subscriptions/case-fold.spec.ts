import {
  compareStrings,
  foldCompare,
  foldEndsWith,
  foldEquals,
  foldIncludes,
  foldKey,
  foldStartsWith,
} from './case-fold';

/**
 * Strings chosen to break an ASCII-only shortcut: letters around the A–Z / a–z boundaries
 * ('@', '[', '`', '{'), characters whose lower case changes length ('İ' → 'i̇') or lands in
 * ASCII ('K' Kelvin sign → 'k'), the context-dependent final sigma, and accented letters.
 */
const SAMPLES = [
  '',
  'a',
  'A',
  'ab',
  'AB',
  'Ab',
  'abc',
  'ABC',
  'xabcx',
  'XABCX',
  '@[`{',
  'Z',
  'z',
  'İ',
  'i̇',
  'İx',
  'xİ',
  'i',
  'I',
  '\u212A',
  'k',
  'K',
  'ΟΔΟΣ',
  'οδος',
  'οδοσ',
  'École',
  'école',
  'ÉCOLE',
  'straße',
  'STRASSE',
  'Open',
  'open',
  'OPEN',
  'opened',
  'reopen',
  'aaaaaaaaab',
  'AAAAAAAAAB',
  '2024-05-01T10:00:00.000Z',
  '2024-05-01t10:00:00.000z',
];

const PAIRS = SAMPLES.flatMap((s) => SAMPLES.map((c) => [s, c.toLowerCase()] as const));

describe('case folding', () => {
  it('foldEquals agrees with toLowerCase() ===', () => {
    for (const [s, lower] of PAIRS) {
      expect([s, lower, foldEquals(s, lower)]).toEqual([s, lower, s.toLowerCase() === lower]);
    }
  });

  it('foldStartsWith agrees with toLowerCase().startsWith', () => {
    for (const [s, lower] of PAIRS) {
      expect([s, lower, foldStartsWith(s, lower)]).toEqual([
        s,
        lower,
        s.toLowerCase().startsWith(lower),
      ]);
    }
  });

  it('foldEndsWith agrees with toLowerCase().endsWith', () => {
    for (const [s, lower] of PAIRS) {
      expect([s, lower, foldEndsWith(s, lower)]).toEqual([
        s,
        lower,
        s.toLowerCase().endsWith(lower),
      ]);
    }
  });

  it('foldIncludes agrees with toLowerCase().includes', () => {
    for (const [s, lower] of PAIRS) {
      expect([s, lower, foldIncludes(s, lower)]).toEqual([
        s,
        lower,
        s.toLowerCase().includes(lower),
      ]);
    }
  });

  it('foldIncludes agrees on long strings, which use the engine search', () => {
    const long = 'X'.repeat(300) + 'NeedLe' + 'y'.repeat(300);
    expect(foldIncludes(long, 'needle')).toBe(true);
    expect(foldIncludes(long, 'needles')).toBe(false);
  });

  it('foldCompare agrees with comparing toLowerCase()', () => {
    for (const [s, lower] of PAIRS) {
      expect([s, lower, foldCompare(s, lower)]).toEqual([
        s,
        lower,
        compareStrings(s.toLowerCase(), lower),
      ]);
    }
  });

  it('foldKey is toLowerCase(), and returns the same string when it has nothing to fold', () => {
    for (const s of SAMPLES) expect(foldKey(s)).toBe(s.toLowerCase());
    const lower = 'already lower';
    expect(foldKey(lower)).toBe(lower);
  });
});
