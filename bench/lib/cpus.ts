/**
 * Where the suite's processes run: the server under test on a CPU of its own, the load
 * generator and this process (the publisher) on the others.
 *
 * Left to the scheduler, the two share a core more often than one would think. A socket
 * write wakes its reader with a "sync" wake-up, which asks the kernel to run the reader on
 * the writer's CPU; a `perf sched` trace of a paced change at N = 1 000 (bench/README.md,
 * "CPU placement") showed the load generator and our server taking turns on one core, 5 to
 * 10 µs each, for 12 ms, while the other core was idle. Where that happened, the change's
 * first delivery came up to 7 ms late; which server it happened to, and when, was chance.
 * Subscribers of a real server do not share its CPU, so the suite does not let them.
 *
 * `BENCH_PIN=0` leaves placement to the scheduler. With one CPU, or without `taskset`
 * (util-linux), nothing is pinned and the report says so.
 */
import { execFileSync } from 'node:child_process';

export interface Placement {
  /** CPU list (taskset syntax) for each server under test */
  server: string;
  /** for the load generator and the orchestrator */
  rest: string;
  /** every CPU this process was allowed at start: for the routing and write-path benches */
  all: string;
}

let current: Placement | null = null;

/** The placement decided by pinSuite, or null when nothing is pinned. */
export function placement(): Placement | null {
  return current;
}

/** The CPUs this process may run on (its affinity), or null when taskset is missing. */
function allowedCpus(): number[] | null {
  try {
    const out = execFileSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' });
    const list = out.slice(out.lastIndexOf(':') + 1).trim();
    const cpus: number[] = [];
    for (const part of list.split(',')) {
      const [a, b] = part.split('-').map(Number);
      for (let c = a; c <= (b ?? a); c++) cpus.push(c);
    }
    return cpus.every(Number.isInteger) && cpus.length > 0 ? cpus : null;
  } catch {
    return null;
  }
}

/**
 * Decides the placement and moves this process (all its threads) to the `rest` CPUs.
 * Returns the report's line: what was pinned where, or why nothing was.
 */
export function pinSuite(): string {
  if (process.env.BENCH_PIN === '0') return 'CPU placement: left to the scheduler (BENCH_PIN=0)';
  const cpus = allowedCpus();
  if (!cpus) return 'CPU placement: left to the scheduler (no taskset)';
  if (cpus.length < 2) return 'CPU placement: left to the scheduler (one CPU)';
  const server = String(cpus[cpus.length - 1]);
  const rest = cpus.slice(0, -1).join(',');
  try {
    execFileSync('taskset', ['-a', '-p', '-c', rest, String(process.pid)], { stdio: 'ignore' });
  } catch (err) {
    return `CPU placement: left to the scheduler (taskset failed: ${(err as Error).message})`;
  }
  current = { server, rest, all: cpus.join(',') };
  return (
    `CPU placement: each server on CPU ${server}, the load generator and the publisher on ` +
    `CPU ${rest} (taskset; BENCH_PIN=0 turns it off)`
  );
}
