import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { processTree, runTimeMs, waitTimeMs, waitTimeMsOf } from './proc';

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
      const ran = tree.reduce((sum, pid) => sum + runTimeMs(pid), 0);
      await Promise.all([a, b].map((p) => new Promise((resolve) => p.once('exit', resolve))));
      expect(waited).toBeGreaterThan(50);
      expect(ran).toBeGreaterThan(50);
    },
  );

  it('reads nothing for a process that does not exist, and does not throw', () => {
    const gone = 2 ** 22 + 1; // above Linux's pid_max
    expect(waitTimeMsOf([gone])).toBe(HAS_SCHEDSTAT ? 0 : NaN);
    expect(waitTimeMs(gone)).toBe(HAS_SCHEDSTAT ? 0 : NaN);
  });
});
