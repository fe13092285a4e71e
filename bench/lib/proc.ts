/** Reading the machine and other processes through /proc (Linux only). */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { release } from 'node:os';

function sh(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return null;
  }
}

/** Clock ticks per second for /proc/<pid>/stat times (`getconf CLK_TCK`). */
export const CLK_TCK = Number(sh('getconf', ['CLK_TCK']) ?? '100') || 100;

interface StatLine {
  ppid: number;
  ticks: number;
}

/**
 * A `stat` file (`/proc/<pid>/stat`, `/proc/<pid>/task/<tid>/stat`) read and split after the
 * command name, which is in parentheses and may contain spaces: [0] is field 3 (state).
 * Null when the process or thread has ended.
 */
function statFields(path: string): string[] | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

function readStat(pid: number): StatLine | null {
  const fields = statFields(`/proc/${pid}/stat`);
  if (!fields) return null;
  // ppid is field 4, utime 14, stime 15.
  return { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) };
}

/** pid and all its live descendants (nginx master + workers, a shell's child, …). */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (!st) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(Number(name));
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const stack = [pid];
  while (stack.length > 0) {
    const p = stack.pop() as number;
    out.push(p);
    stack.push(...(children.get(p) ?? []));
  }
  return out;
}

/** utime+stime of pid and its descendants, in milliseconds (CLK_TCK resolution). */
export function cpuMs(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) ticks += readStat(p)?.ticks ?? 0;
  return (ticks * 1000) / CLK_TCK;
}

const HAS_SCHEDSTAT = existsSync('/proc/self/schedstat');

/**
 * CPU time of `pid` and its descendants, ms, from every thread's
 * `/proc/<pid>/task/<tid>/schedstat` (time on a CPU, in ns): the scheduler's own account,
 * exact to the nanosecond, where utime+stime is sampled by the tick on kernels with
 * CONFIG_TICK_CPU_ACCOUNTING and counted in 1/CLK_TCK steps. Threads that ended meanwhile
 * drop out of the sum, so read it over windows in which none does. Without schedstat
 * (a kernel built without it), utime+stime: coarser, but a figure.
 */
export function runTimeMs(pid: number): number {
  return HAS_SCHEDSTAT ? schedstatRunMs(processTree(pid)) : cpuMs(pid);
}

/**
 * How long the threads of `pid` and its descendants were ready to run but waited for a CPU
 * that something else held, ms (schedstat's run_delay; summed over threads, so two threads
 * waiting 1 ms each count 2). Over a scenario it says whether another process (or another
 * thread of the same program) took the CPU from a server or the load generator. Time the
 * hypervisor takes from the whole virtual CPU is not in it (that is steal time). NaN
 * without schedstat.
 */
export function waitTimeMs(pid: number): number {
  return waitTimeMsOf(processTree(pid));
}

/**
 * waitTimeMs of these processes only (`processTree` read once before): cheap enough to
 * sample once per paced change, where scanning all of /proc for descendants is not.
 */
export function waitTimeMsOf(pids: number[]): number {
  return waitSumMs(threadTimesMs(pids));
}

/** Per thread (`pid/tid`): time on a CPU and time waiting for one, ms (schedstat). */
export type ThreadTimes = Map<string, [run: number, wait: number]>;

/** ThreadTimes of every thread of these processes. Empty without schedstat. */
export function threadTimesMs(pids: number[]): ThreadTimes {
  const out: ThreadTimes = new Map();
  if (!HAS_SCHEDSTAT) return out;
  for (const p of pids) {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      continue; // ended meanwhile
    }
    for (const tid of tasks) {
      try {
        const f = readFileSync(`/proc/${p}/task/${tid}/schedstat`, 'utf8').split(' ');
        out.set(`${p}/${tid}`, [Number(f[0]) / 1e6, Number(f[1]) / 1e6]);
      } catch {
        // the thread ended meanwhile
      }
    }
  }
  return out;
}

/** The waits of a `threadTimesMs` sample, summed over its threads (waitTimeMsOf), ms. */
export function waitSumMs(times: ThreadTimes): number {
  if (!HAS_SCHEDSTAT) return NaN;
  let sum = 0;
  for (const [, wait] of times.values()) sum += wait;
  return sum;
}

/**
 * Given `threadTimesMs` samples taken at the marks of a series (one per change, and one at
 * its end), the waits of the thread that ran longest from the first mark to the last, per
 * interval between marks, ms: for a Node server or the load generator, its main thread
 * (the one doing the work: the others' waits, e.g. a GC helper's while the main thread
 * holds the CPU, delay no delivery). Undefined with fewer than two marks or no thread
 * seen at both ends.
 */
export function busiestThreadWaits(
  marks: ThreadTimes[],
): { thread: string; waits: number[] } | undefined {
  if (marks.length < 2) return undefined;
  const first = marks[0];
  const last = marks[marks.length - 1];
  let thread: string | undefined;
  let most = -1;
  for (const [key, [run]] of last) {
    const before = first.get(key);
    if (before === undefined) continue;
    if (run - before[0] > most) {
      most = run - before[0];
      thread = key;
    }
  }
  if (thread === undefined) return undefined;
  const key = thread;
  const waits = marks.slice(1).map((m, k) => {
    const now = m.get(key)?.[1];
    const then = marks[k].get(key)?.[1];
    return now === undefined || then === undefined ? NaN : Math.round((now - then) * 100) / 100;
  });
  return { thread: key, waits };
}

/**
 * From the first and last of `threadTimesMs` samples, each thread's time on a CPU and its
 * wait for one in between, ms rounded to 0.01, busiest first: who shared the CPU with the
 * work over a series. `main` marks a process's main thread (tid = pid); `name` is
 * `/proc/<pid>/task/<tid>/comm` (Node 20 leaves V8's helpers and workers "node", libuv's
 * pool "libuv-worker"). Threads not seen at both ends, or that neither ran nor waited, are
 * left out; undefined without schedstat.
 */
export interface ThreadShare {
  thread: string;
  name: string;
  main: boolean;
  runMs: number;
  waitMs: number;
}

export function threadShares(first: ThreadTimes, last: ThreadTimes): ThreadShare[] | undefined {
  if (!HAS_SCHEDSTAT || last.size === 0) return undefined;
  const out: ThreadShare[] = [];
  for (const [key, [run, wait]] of last) {
    const before = first.get(key);
    if (before === undefined) continue;
    const runMs = Math.round((run - before[0]) * 100) / 100;
    const waitMs = Math.round((wait - before[1]) * 100) / 100;
    if (runMs === 0 && waitMs === 0) continue;
    const [pid, tid] = key.split('/');
    let name = '?';
    try {
      name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
    } catch {
      // ended meanwhile: its times still count
    }
    out.push({ thread: key, name, main: pid === tid, runMs, waitMs });
  }
  return out.sort((a, b) => b.runMs - a.runMs);
}

/** The nice value of each thread of a process (Linux /proc; empty when unreadable). */
export function threadNices(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    const fields = statFields(`/proc/${pid}/task/${tid}/stat`);
    if (fields) out.push(Number(fields[16])); // field 19 (a thread that ended is left out)
  }
  return out;
}

/** Time on a CPU of every thread of these processes, summed, in ms (schedstat). */
function schedstatRunMs(pids: number[]): number {
  let ms = 0;
  for (const [run] of threadTimesMs(pids).values()) ms += run;
  return ms;
}

/** utime+stime of every process whose command name is `comm` (e.g. `postgres`), in ms. */
export function commandCpuMs(comm: string): number {
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let text: string;
    try {
      text = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // ended meanwhile
    }
    if (text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')) !== comm) continue;
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return (ticks * 1000) / CLK_TCK;
}

/**
 * Machine-wide CPU time, ms, from the first line of /proc/stat: `busy` is user + nice +
 * system (time charged to processes), `interrupts` is irq + softirq (loopback TCP is largely
 * softirq work), `steal` time taken by the hypervisor.
 */
export function machineCpuMs(): { busy: number; interrupts: number; steal: number } {
  const f = readFileSync('/proc/stat', 'utf8')
    .split('\n', 1)[0]
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const ms = (ticks: number): number => (ticks * 1000) / CLK_TCK;
  return { busy: ms(f[0] + f[1] + f[2]), interrupts: ms(f[5] + f[6]), steal: ms(f[7] ?? 0) };
}

/** Resident set size of pid and its descendants, bytes (VmRSS from /proc/<pid>/status). */
export function rssBytes(pid: number): number {
  let kb = 0;
  for (const p of processTree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch {
      // exited meanwhile
    }
  }
  return kb * 1024;
}

/** The open-files limit of a process (soft, hard), from /proc/<pid>/limits. */
export function fdLimit(pid: number | 'self' = 'self'): { soft: number; hard: number } {
  try {
    const m = /Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/.exec(
      readFileSync(`/proc/${pid}/limits`, 'utf8'),
    );
    if (m) {
      const n = (s: string): number => (s === 'unlimited' ? Infinity : Number(s));
      return { soft: n(m[1]), hard: n(m[2]) };
    }
  } catch {
    // fall through
  }
  return { soft: NaN, hard: NaN };
}

export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  node: string;
  kernel: string;
  memTotalMiB: number;
  clkTck: number;
}

export function machineInfo(): MachineInfo {
  let cpuModel = 'unknown';
  let memTotalMiB = NaN;
  try {
    cpuModel = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpuModel;
    const mem = /MemTotal:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (mem) memTotalMiB = Math.round(Number(mem[1]) / 1024);
  } catch {
    // not Linux
  }
  return {
    nproc: Number(sh('nproc', [])) || 0,
    cpuModel,
    node: process.version,
    kernel: release(),
    memTotalMiB,
    clkTck: CLK_TCK,
  };
}

/** `git rev-parse --short HEAD`, or 'uncommitted' when there is no commit yet. */
export function gitCommit(cwd: string): { commit: string; dirty: boolean } {
  const commit = sh('git', ['-C', cwd, 'rev-parse', '--short', 'HEAD']) ?? 'uncommitted';
  const status = sh('git', ['-C', cwd, 'status', '--porcelain']);
  return { commit, dirty: status === null || status.length > 0 };
}
