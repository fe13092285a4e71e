/**
 * Case-insensitive string comparison without allocating on the hot path.
 *
 * "Case-insensitive" means `a.toLowerCase()` compared with `b.toLowerCase()` (UTF-16 code
 * units, not locale-aware). The constant side is lower-cased once when a filter is compiled;
 * the document side is folded character by character while it is ASCII, because
 * `String#toLowerCase` allocates a new string on every call, even for a string that is
 * already lower case. A document string with a non-ASCII character in the compared region
 * falls back to `toLowerCase()`: Unicode lower-casing can change the length of a string
 * (`'İ'` → `'i̇'`) or map a non-ASCII character onto ASCII (`'K'` Kelvin sign → `'k'`).
 */

const NON_ASCII = -1;
const MISMATCH = 0;
const MATCH = 1;

/** Above this length, `foldIncludes` uses the engine's substring search instead of a naive scan. */
const NAIVE_SEARCH_MAX_LENGTH = 256;

function foldAscii(code: number): number {
  return code >= 65 && code <= 90 ? code | 0x20 : code;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) > 127) return false;
  }
  return true;
}

/**
 * Compares `s[offset, offset + lower.length)` with `lower`, front to back. A mismatch found
 * before any non-ASCII character is final when `s` is aligned with `lower.toLowerCase()`
 * up to that point, which holds for a prefix of `s` or for any region of an ASCII `s`.
 */
function compareForward(s: string, offset: number, lower: string): number {
  for (let i = 0; i < lower.length; i++) {
    const code = s.charCodeAt(offset + i);
    if (code > 127) return NON_ASCII;
    if (foldAscii(code) !== lower.charCodeAt(i)) return MISMATCH;
  }
  return MATCH;
}

/** Same as `compareForward` on the suffix of `s`, back to front (final for a suffix). */
function compareBackward(s: string, lower: string): number {
  const shift = s.length - lower.length;
  for (let i = lower.length - 1; i >= 0; i--) {
    const code = s.charCodeAt(shift + i);
    if (code > 127) return NON_ASCII;
    if (foldAscii(code) !== lower.charCodeAt(i)) return MISMATCH;
  }
  return MATCH;
}

/** `s.toLowerCase() === lower`; `lower` must already be lower case. */
export function foldEquals(s: string, lower: string): boolean {
  if (s.length === lower.length) {
    const result = compareForward(s, 0, lower);
    if (result !== NON_ASCII) return result === MATCH;
  } else if (isAscii(s)) {
    return false;
  }
  return s.toLowerCase() === lower;
}

/** `s.toLowerCase().startsWith(lower)`; `lower` must already be lower case. */
export function foldStartsWith(s: string, lower: string): boolean {
  if (s.length >= lower.length) {
    const result = compareForward(s, 0, lower);
    if (result !== NON_ASCII) return result === MATCH;
  } else if (isAscii(s)) {
    return false;
  }
  return s.toLowerCase().startsWith(lower);
}

/** `s.toLowerCase().endsWith(lower)`; `lower` must already be lower case. */
export function foldEndsWith(s: string, lower: string): boolean {
  if (s.length >= lower.length) {
    const result = compareBackward(s, lower);
    if (result !== NON_ASCII) return result === MATCH;
  } else if (isAscii(s)) {
    return false;
  }
  return s.toLowerCase().endsWith(lower);
}

/** `s.toLowerCase().includes(lower)`; `lower` must already be lower case. */
export function foldIncludes(s: string, lower: string): boolean {
  if (lower.length === 0) return true;
  if (s.length > NAIVE_SEARCH_MAX_LENGTH || !isAscii(s)) return s.toLowerCase().includes(lower);
  const first = lower.charCodeAt(0);
  for (let i = 0; i <= s.length - lower.length; i++) {
    if (foldAscii(s.charCodeAt(i)) === first && compareForward(s, i, lower) === MATCH) {
      return true;
    }
  }
  return false;
}

/** The sign of `s.toLowerCase()` compared with `lower` (-1, 0 or 1, code-unit order). */
export function foldCompare(s: string, lower: string): number {
  const common = Math.min(s.length, lower.length);
  for (let i = 0; i < common; i++) {
    const code = s.charCodeAt(i);
    if (code > 127) return compareStrings(s.toLowerCase(), lower);
    const diff = foldAscii(code) - lower.charCodeAt(i);
    if (diff !== 0) return diff < 0 ? -1 : 1;
  }
  // The compared prefix was ASCII, so it lower-cases to exactly `lower`'s prefix, and
  // lower-casing never shortens a string: the longer side sorts last.
  return s.length === lower.length ? 0 : s.length > lower.length ? 1 : -1;
}

/**
 * `s.toLowerCase()`, returning `s` itself (no allocation) when it is ASCII without upper-case
 * letters: the key to look `s` up in a set of lower-cased constants.
 */
export function foldKey(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const code = s.charCodeAt(i);
    if (code > 127 || (code >= 65 && code <= 90)) return s.toLowerCase();
  }
  return s;
}

export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
