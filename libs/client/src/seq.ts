import type { Seq } from './types';

/**
 * Seqs are decimal strings that may exceed 2^53, so they are compared as BigInts rather
 * than as numbers or as plain strings ("9" > "10").
 */
export function compareSeq(a: Seq, b: Seq): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** True when `seq` is strictly after `last`; anything is after "nothing seen yet". */
export function isAfter(seq: Seq, last: Seq | null | undefined): boolean {
  return last == null || compareSeq(seq, last) > 0;
}

export function minSeq(a: Seq | null | undefined, b: Seq | null | undefined): Seq | null {
  if (a == null) return b ?? null;
  if (b == null) return a;
  return compareSeq(a, b) <= 0 ? a : b;
}
