/**
 * What one change costs ours' server with nobody subscribed, against the gap between
 * changes: the sample app's `PATCH` (started as the suite starts it, on a CPU of its own)
 * back to back and 1, 2, 5, 10, 30 and 100 ms apart; CPU per change from the server's
 * threads' schedstat, less its idle rate over the same wall time. At the suite's pace
 * (100 ms) a change costs 3–4 times what it costs back to back: docs/performance.md,
 * "What a change costs when changes come apart". Measure a change to the per-change path
 * here, at the gaps that matter, not back to back only. Prints figures only.
 *
 *   node -r ts-node/register/transpile-only -r tsconfig-paths/register bench/patch-cost.bench.ts
 *
 * Env: PATCH_COST_GAPS (ms, comma-separated; default 0,1,2,5,10,30,100),
 * PATCH_COST_CHANGES (per gap and round, default 200), PATCH_COST_ROUNDS (the gaps in
 * turn, default 2), PATCH_COST_WARM (warm-up changes back to back, default 3000).
 */
import { resolve } from 'node:path';
import { sleep } from './lib/common';
import { pinSuite } from './lib/cpus';
import { runTimeMs } from './lib/proc';
import type { RunningTarget, SuiteContext } from './lib/target';
import { oursTarget } from './targets/ours';

function setting(name: string, fallback: string): number[] {
  const values = (process.env[name] ?? fallback).split(',').map(Number);
  if (values.some((v) => !Number.isInteger(v) || v < 0)) {
    console.error(`${name}=${process.env[name]}: whole numbers ≥ 0, comma-separated`);
    process.exit(2);
  }
  return values;
}

const GAPS = setting('PATCH_COST_GAPS', '0,1,2,5,10,30,100');
const [CHANGES] = setting('PATCH_COST_CHANGES', '200');
const [ROUNDS] = setting('PATCH_COST_ROUNDS', '2');
const [WARM] = setting('PATCH_COST_WARM', '3000');
const IDLE_MS = 3000;

/** CPU µs per change over `count` changes `gapMs` apart, less the idle rate. */
async function series(
  rt: RunningTarget,
  first: number,
  count: number,
  gapMs: number,
  idleMsPerMs: number,
): Promise<number> {
  await sleep(200);
  const cpu0 = runTimeMs(rt.pid);
  const start = Date.now();
  for (let k = 0; k < count; k++) {
    if (gapMs > 0) await sleep(start + k * gapMs - Date.now());
    await rt.publish(first + k);
  }
  const wallMs = Date.now() - start;
  const cpuMs = runTimeMs(rt.pid) - cpu0;
  return ((cpuMs - idleMsPerMs * wallMs) * 1000) / count;
}

async function main(): Promise<void> {
  const placed = pinSuite();
  const ctx: SuiteContext = {
    root: resolve(__dirname, '..'),
    buildDir: '',
    quick: false,
    log: (message) => console.error(message),
  };
  const rt = await oursTarget.start(ctx);
  try {
    const total = WARM + ROUNDS * GAPS.length * CHANGES;
    console.error(`preparing ${total} tasks`);
    await rt.prepare(total);
    for (let seq = 0; seq < WARM; seq++) await rt.publish(seq);
    await sleep(1000);
    const idle0 = runTimeMs(rt.pid);
    await sleep(IDLE_MS);
    const idleMsPerMs = (runTimeMs(rt.pid) - idle0) / IDLE_MS;

    const perGap = GAPS.map(() => [] as number[]);
    let seq = WARM;
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < GAPS.length; i++) {
        perGap[i].push(await series(rt, seq, CHANGES, GAPS[i], idleMsPerMs));
        seq += CHANGES;
      }
    }
    console.log(`node ${process.version}; ${placed}`);
    console.log(
      `ours' PATCH with nobody subscribed, ${CHANGES} changes per gap and round, after ` +
        `${WARM} back to back; idle ${(idleMsPerMs * 1000).toFixed(2)} ms of CPU per second`,
    );
    console.log(
      ['gap ms'.padEnd(8), ...perGap[0].map((_, r) => `round ${r + 1}`.padStart(10))].join(' '),
    );
    GAPS.forEach((gap, i) => {
      console.log(
        [String(gap).padEnd(8), ...perGap[i].map((us) => `${us.toFixed(0)} µs`.padStart(10))].join(
          ' ',
        ),
      );
    });
  } finally {
    await rt.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
