import { readdirSync, readFileSync } from 'node:fs';
import { setPriority } from 'node:os';

/**
 * Lower priority for the threads that work beside the event loop, on Linux.
 *
 * A Node server has one thread that serves (the event loop) and others that help it: V8's
 * platform workers (4 in Node 20, whatever the CPU count), which run its optimizing
 * compiler and the concurrent and parallel parts of its garbage collector, and our SQLite
 * checkpoint worker (which lowers itself only when asked: `sqliteCheckpoint.nice`). Where
 * the process has one core to itself (a container with one CPU, a process pinned to one), a
 * helper that becomes runnable takes the core from the event loop for a scheduler slice,
 * in the middle of a fan-out: measured here at N = 1 000 over 100 paced changes, the event
 * loop waited 49–67 ms for its core, 40 ms of it behind V8's compiler threads, and the
 * slowest changes reached their last subscriber 5–10 ms late.
 * At nice 19 the scheduler gives a helper the core when the event loop does not want it
 * (between changes) and about 1.5 % of it when both do; where there are idle cores the
 * helpers run there at once, as before.
 *
 * The nice value of one thread is set with setpriority(PRIO_PROCESS, tid), which on Linux
 * applies to that thread alone (POSIX would make it the process's; that is why this does
 * nothing elsewhere). Raising a nice value needs no privilege; lowering it back does.
 */

/** Linux, where a thread's nice value is its own (see the file's comment). */
const PER_THREAD = process.platform === 'linux';

/**
 * Threads that started within this many clock ticks (USER_HZ, 100 a second on every Linux
 * we know: 50 ms) of the process's first thread after the main one started with Node:
 * V8's platform workers and Node's own, before any JavaScript ran. (Not counted from the
 * process's own start: that is the fork, and the exec of a launcher such as `taskset` or
 * `npm` may come 60–200 ms later on a busy machine.)
 */
const STARTUP_TICKS = 5;

/**
 * The fields of /proc/self/task/<tid>/stat after the command name (which may itself hold
 * spaces and parentheses): [0] is field 3; undefined when the thread has ended.
 */
function statFields(tid: string | number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** Field 22 of a thread's stat (start time, ticks), or undefined. */
function startTicks(tid: string): number | undefined {
  const fields = statFields(tid);
  return fields && Number(fields[19]);
}

/**
 * Sets the nice value of every thread that started with the process, the main thread
 * excepted: V8's platform workers (compiler, GC helpers) and Node's own startup threads.
 * Threads started later are left as they are: libuv's pool (file system, DNS, crypto work
 * that a request waits for) and the application's workers. Call it early in `main`, before
 * anything could start libuv's pool. Returns how many threads it changed (0 elsewhere
 * than Linux, or with `nice` 0).
 */
export function lowerStartupThreads(nice: number): number {
  if (!PER_THREAD || nice <= 0) return 0;
  const self = String(process.pid);
  const others: { tid: string; start: number }[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    if (tid === self) continue;
    const start = startTicks(tid);
    if (start !== undefined) others.push({ tid, start });
  }
  if (others.length === 0) return 0;
  const first = Math.min(...others.map((t) => t.start));
  let changed = 0;
  for (const { tid, start } of others) {
    if (start - first > STARTUP_TICKS) continue;
    try {
      setPriority(Number(tid), nice);
      changed++;
    } catch {
      // ended meanwhile, or not allowed: it keeps its priority
    }
  }
  return changed;
}

/**
 * Source for a worker thread to lower its own priority with (`os.setPriority(0, nice)` is
 * the calling thread on Linux, the whole process elsewhere, hence the check), and to tell
 * its thread id (`/proc/thread-self`, for tests and diagnostics): evaluated in a worker
 * whose source is a string, so plain JavaScript. Leaves `ownTid` (a number, 0 if unknown).
 */
export const LOWER_OWN_PRIORITY_SOURCE = `
let ownTid = 0;
if (process.platform === 'linux') {
  try {
    ownTid = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop()) || 0;
    if (workerData.nice > 0) require('node:os').setPriority(0, workerData.nice);
  } catch {
    // not allowed, or no /proc: the thread keeps its priority
  }
}
`;

/** A thread's nice value (Linux; undefined elsewhere or when it has ended). */
export function threadNice(tid: number): number | undefined {
  if (!PER_THREAD) return undefined;
  const fields = statFields(tid);
  return fields && Number(fields[16]); // field 19
}
