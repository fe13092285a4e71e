import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { lowerStartupThreads } from './thread-priority';

const LINUX = process.platform === 'linux';

/**
 * A fresh Node process (this one has threads of jest's own): it waits 300 ms, starts libuv's
 * pool with a file read, calls lowerStartupThreads(19), starts a worker, and prints each
 * thread's nice value, whether it existed before the call, and what the call returned.
 */
function childReport(): {
  changed: number;
  pid: number;
  threads: { tid: number; nice: number; before: boolean }[];
} {
  const script = `
const { readdirSync, readFileSync, readFile } = require('node:fs');
const { Worker } = require('node:worker_threads');
const { lowerStartupThreads, threadNice } = require(${JSON.stringify(join(__dirname, 'thread-priority.ts'))});
const tids = () => readdirSync('/proc/self/task').map(Number);
setTimeout(() => readFile(__filename, () => {
  const before = new Set(tids());
  const changed = lowerStartupThreads(19);
  const w = new Worker('setTimeout(() => {}, 200)', { eval: true });
  w.once('online', () => {
    const threads = tids().map((tid) => ({ tid, nice: threadNice(tid), before: before.has(tid) }));
    process.stdout.write(JSON.stringify({ changed, pid: process.pid, threads }));
  });
}), 300);
`;
  const out = execFileSync(
    process.execPath,
    ['-r', 'ts-node/register/transpile-only', '-e', script],
    { cwd: join(__dirname, '..', '..', '..', '..'), encoding: 'utf8', timeout: 30_000 },
  );
  return JSON.parse(out);
}

// elsewhere a nice value is the whole process's: lowerStartupThreads does nothing there
(LINUX ? describe : describe.skip)('lowerStartupThreads (Linux)', () => {
  it("lowers the threads that started with the process (V8's), not the main thread, libuv's pool or later workers", () => {
    const { changed, pid, threads } = childReport();
    const main = threads.find((t) => t.tid === pid);
    expect(main?.nice).toBe(0);
    const lowered = threads.filter((t) => t.nice === 19);
    // Node 20 starts 4 V8 platform workers and a delayed-task thread before any JavaScript
    expect(changed).toBeGreaterThanOrEqual(4);
    expect(lowered).toHaveLength(changed);
    expect(lowered.every((t) => t.before)).toBe(true);
    // what stayed: the main thread, libuv's pool (started by the read, 300 ms in), the worker
    const kept = threads.filter((t) => t.nice === 0);
    expect(kept.filter((t) => t.before).length).toBeGreaterThanOrEqual(1 + 4);
    expect(kept.filter((t) => !t.before).length).toBeGreaterThanOrEqual(1);
  });

  it('does nothing with nice 0', () => {
    expect(lowerStartupThreads(0)).toBe(0);
  });
});
