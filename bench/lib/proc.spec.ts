import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  busiestThreadWaits,
  processTree,
  runTimeMs,
  threadNices,
  threadShares,
  threadTimesMs,
  waitSumMs,
  waitTimeMs,
  waitTimeMsOf,
} from './proc';

const HAS_SCHEDSTAT = existsSync('/proc/self/schedstat');
const HAS_TASKSET = spawnSync('taskset', ['-c', '0', 'true']).status === 0;

describe('waitTimeMs (schedstat run_delay: ready to run, CPU held by another task)', () => {
  (HAS_SCHEDSTAT && HAS_TASKSET ? it : it.skip)(
    'counts the time two busy processes on one CPU wait for each other',
    async () => {
      // two busy loops pinned to CPU 0 for 400 ms each: each runs about half the time
      const busy = (): ReturnType<typeof spawn> =>
        spawn(
          'taskset',
          [
            '-c',
            '0',
            process.execPath,
            '-e',
            'const t = Date.now(); while (Date.now() - t < 400);',
          ],
          {
            stdio: 'ignore',
          },
        );
      const a = busy();
      const b = busy();
      await new Promise((resolve) => setTimeout(resolve, 250));
      const tree = [...processTree(a.pid as number), ...processTree(b.pid as number)];
      const waited = waitTimeMsOf(tree);
      const threads = threadTimesMs(tree);
      const ran = tree.reduce((sum, pid) => sum + runTimeMs(pid), 0);
      await Promise.all([a, b].map((p) => new Promise((resolve) => p.once('exit', resolve))));
      expect(waited).toBeGreaterThan(50);
      // per thread, read a moment later: at least as much, summed
      expect(waitSumMs(threads)).toBeGreaterThanOrEqual(waited);
      expect(threads.size).toBeGreaterThanOrEqual(2);
      expect(ran).toBeGreaterThan(50);
    },
  );

  it('reads nothing for a process that does not exist, and does not throw', () => {
    const gone = 2 ** 22 + 1; // above Linux's pid_max
    expect(waitTimeMsOf([gone])).toBe(HAS_SCHEDSTAT ? 0 : NaN);
    expect(waitTimeMs(gone)).toBe(HAS_SCHEDSTAT ? 0 : NaN);
  });
});

describe('busiestThreadWaits (the waits of the thread that ran longest, per interval)', () => {
  const mark = (...threads: [string, number, number][]) =>
    new Map(threads.map(([key, run, wait]) => [key, [run, wait] as [number, number]]));

  it('picks the thread with the most run time between the first and last marks, and gives its waits per interval', () => {
    const marks = [
      mark(['1/1', 100, 10], ['1/2', 0, 0]),
      mark(['1/1', 150, 10.5], ['1/2', 80, 40]),
      mark(['1/1', 230, 12.25], ['1/2', 90, 45]),
    ];
    // 1/1 ran 130 ms, 1/2 90 ms: 1/2 waited more, but 1/1 did the work
    expect(busiestThreadWaits(marks)).toEqual({ thread: '1/1', waits: [0.5, 1.75] });
  });

  it('ignores threads not seen at both ends, and gives NaN for an interval a thread missed', () => {
    const marks = [
      mark(['1/1', 0, 0]),
      mark(['1/1', 10, 1], ['1/3', 500, 0]),
      mark(['1/2', 900, 0]),
      mark(['1/1', 20, 3], ['1/2', 1000, 0]),
    ];
    expect(busiestThreadWaits(marks)).toEqual({ thread: '1/1', waits: [1, NaN, NaN] });
  });

  it('has nothing to say with fewer than two marks or no thread at both ends', () => {
    expect(busiestThreadWaits([])).toBeUndefined();
    expect(busiestThreadWaits([mark(['1/1', 0, 0])])).toBeUndefined();
    expect(busiestThreadWaits([mark(['1/1', 0, 0]), mark(['1/2', 5, 0])])).toBeUndefined();
  });
});

(HAS_SCHEDSTAT ? describe : describe.skip)('threadShares and threadNices (this process)', () => {
  const me = `${process.pid}/${process.pid}`;
  const mark = (...threads: [string, number, number][]) =>
    new Map(threads.map(([key, run, wait]) => [key, [run, wait] as [number, number]]));

  it('gives each thread its run and wait between two samples, busiest first, with its name and whether it is a main thread', () => {
    const shares = threadShares(
      mark([me, 10, 1], ['1/999999999', 0, 0], ['1/888888888', 0, 0]),
      mark([me, 30.004, 1.5], ['1/999999999', 50, 4], ['1/888888888', 0, 0], ['1/777', 9, 9]),
    );
    // '1/888888888' neither ran nor waited; '1/777' was not there at the first sample
    expect(shares).toEqual([
      { thread: '1/999999999', name: '?', main: false, runMs: 50, waitMs: 4 },
      { thread: me, name: 'node', main: true, runMs: 20, waitMs: 0.5 },
    ]);
  });

  it("reads this process's threads' nice values", () => {
    const nices = threadNices(process.pid);
    expect(nices.length).toBeGreaterThan(0);
    expect(nices.every((n) => Number.isInteger(n) && n >= -20 && n <= 19)).toBe(true);
    expect(threadNices(999_999_999)).toEqual([]);
  });
});
