/** How the suite fits its child benches into what is left of its time budget. */

/**
 * The child benches' lengths at their defaults on this project's 2-core VMs (routing: 15
 * runs × 3 × 1 000 000 changes; write path: 3 000 ms per side and a few seconds of set-up
 * per database), and what is kept after them for the report.
 */
const CHILD_FULL_MS = { routing: 55_000, writePath: 65_000, after: 10_000 };

/**
 * Settings that make the child benches fit in what is left of the suite's budget, when the
 * fan-out ran long (two runs of 2026-12-07 cut the write path off at its time bound):
 * fewer routing runs (at least 5) and shorter write-path sides (at least 1 000 ms), scaled
 * alike. Settings given in the environment win; quick mode has its own.
 */
export function childSettings(
  leftMs: number,
  env: NodeJS.ProcessEnv,
): { routing: Record<string, string>; writePath: Record<string, string>; scale: number } {
  const scale = Math.min(
    1,
    (leftMs - CHILD_FULL_MS.after) / (CHILD_FULL_MS.routing + CHILD_FULL_MS.writePath),
  );
  if (scale >= 1) return { routing: {}, writePath: {}, scale: 1 };
  const routing: Record<string, string> = {};
  const writePath: Record<string, string> = {};
  if (!env.ROUTING_RUNS) routing.ROUTING_RUNS = String(Math.max(5, Math.floor(15 * scale)));
  if (!env.WRITE_BENCH_MS) {
    writePath.WRITE_BENCH_MS = String(Math.max(1000, Math.floor((3000 * scale) / 100) * 100));
  }
  return { routing, writePath, scale };
}
