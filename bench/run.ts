/**
 * The benchmark suite (`npm run bench`; `BENCH_QUICK=1 npm run bench` for a ~1 minute
 * smoke run). See bench/README.md for what each figure means.
 *
 * For each target (bare ws, Socket.IO, nginx+Nchan when installed, ours) and each N, a
 * fresh server process and a fresh load generator process: N clients connect, authenticate
 * and subscribe, then a burst and a paced series of changes are published and delivered
 * to all of them. Writes bench/results/<timestamp>.{json,md} and <timestamp>-latency.svg.
 *
 * Env: BENCH_QUICK=1, BENCH_N=1000,5000 (fan-out sizes), BENCH_TARGETS=ws,socketio,nchan,ours,
 * BENCH_CONCURRENCY (handshakes in flight), BENCH_SOURCE_IPS (client source addresses),
 * BENCH_OURS_BUILD / BENCH_OURS_ENV / BENCH_OURS_GC (see targets/ours.ts), BENCH_PERF=burst|paced
 * (`perf record -g` of the server during that scenario, into bench/results/perf-*.data;
 * BENCH_PERF_PROCESS=loadgen records the load generator instead),
 * BENCH_PACED_CHANGES (length of the paced series), BENCH_WARM_PUBLISHES (publishes before
 * the N clients subscribe, in blocks of 500; quick: 10), BENCH_WARM_SUBSCRIBERS (clients
 * subscribed through the first 80 % of those at the first N, default 10, 0: none; quick:
 * 2), BENCH_WARM_CHANGES (paced changes to the subscribers before the scenarios, default
 * 10; quick: 3), BENCH_FANOUT_ONLY=1 (no routing and
 * write-path child benches), BENCH_PIN=0 (no CPU pinning of server and load generator: lib/cpus.ts),
 * BENCH_LOADGEN_READER=native|js|ws (how the load generator reads subscribed clients' frames:
 * in C, the default, by a JavaScript FrameReader, or through ws's Receiver: loadgen.ts),
 * BENCH_LOADGEN_TIMES=kernel|read (a delivery's received time, for the clients read in C:
 * the kernel's receive timestamp, the default, or the time of the read),
 * BENCH_LOADGEN_NODE_ARGS (node flags for the load generator).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { dirname, join, relative, resolve } from 'node:path';
import * as ts from 'typescript';
import { changePayload, nowUs, sleep } from './lib/common';
import { Loadgen } from './lib/loadgen-client';
import { loadgenReader, loadgenTimes } from './lib/frame-reader';
import {
  busiestThreadWaits,
  cpuMs,
  fdLimit,
  gitCommit,
  machineCpuMs,
  machineInfo,
  rssBytes,
  processTree,
  runTimeMs,
  threadShares,
  threadTimesMs,
  type ThreadTimes,
  waitSumMs,
  waitTimeMs,
  waitTimeMsOf,
} from './lib/proc';
import { childSettings } from './lib/budget';
import { pinSuite } from './lib/cpus';
import { openConnections, runToCompletion, WANTED_FD_LIMIT } from './lib/process';
import {
  connectTable,
  fanoutTable,
  markdownReport,
  ratioTable,
  textTable,
  type ChildBench,
  type FanoutRun,
  type Ratio,
  type Results,
  type ScenarioResult,
  type TargetResult,
} from './lib/report';
import { percentileSvg, type LatencyPanel } from './lib/svg';
import type { RunningTarget, SuiteContext, Target } from './lib/target';
import { bareWsTarget } from './targets/bare-ws';
import { nchanTarget } from './targets/nchan';
import { oursTarget } from './targets/ours';
import { socketIoTarget } from './targets/socketio';

const ROOT = resolve(__dirname, '..');
const BENCH = join(ROOT, 'bench');
const RESULTS = join(BENCH, 'results');
const BUILD = join(RESULTS, '.build');
const QUICK = process.env.BENCH_QUICK === '1';
// refuse a BENCH_LOADGEN_READER or _TIMES the load generator would refuse, before anything starts
loadgenReader();
loadgenTimes();
/** How the load generators of this run read frames (each tells in its `ready` message). */
const loadgenReads = new Set<string>();
/**
 * Other processes' CPU (% of one core) above which a measured window is flagged, and below
 * which the machine counts as quiet enough to start one (waiting at most quietWaitMs each
 * time, quietBudgetMs in all).
 */
const BACKGROUND_WARN_PCT = 15;
/**
 * The server's own CPU (% of one core) below which, over the last second, it counts as
 * idle: what connecting N clients leaves behind (ours flushes their audit entries within
 * a second; any server may still be collecting garbage) belongs to connecting, not to the
 * next measured scenario.
 */
const SERVER_IDLE_PCT = 5;
/** Sockets a process needs besides one per client: stdio, listeners, the database, … */
const FD_SLACK = 512;

const CONFIG = QUICK
  ? {
      ns: [200, 500],
      burst: 5,
      paced: { changes: 10, intervalMs: 100, lead: 20, fewerFromN: Infinity, fewer: 10 },
      warmPublishes: 20,
      warmBlock: 10,
      warmChanges: 3,
      concurrency: 100,
      connectTimeoutMs: 30_000,
      collectTimeoutMs: 8_000,
      childTimeoutMs: 60_000,
      quietWaitMs: 3_000,
      quietBudgetMs: 10_000,
      fanoutBudgetMs: 2 * 60_000,
      budgetMs: 3 * 60_000,
    }
  : {
      ns: [1000, 5000, 10000],
      burst: 10,
      // 10 s of changes: with 20 (2 s, until 2026-12-06) or 50 (5 s, until 2026-12-07) the
      // p99 was the slowest change's, and whether anything else took a CPU for 10-20 ms
      // during that one change decided it (bench/README.md, "paced"). At N = 10 000, 50
      // (500 000 deliveries), 20 s less per run
      paced: { changes: 100, intervalMs: 100, lead: 20, fewerFromN: 10_000, fewer: 50 },
      warmPublishes: 5000,
      warmBlock: 500,
      warmChanges: 10,
      concurrency: 200,
      connectTimeoutMs: 90_000,
      collectTimeoutMs: 30_000,
      childTimeoutMs: 150_000,
      quietWaitMs: 20_000,
      quietBudgetMs: 90_000,
      fanoutBudgetMs: 7.5 * 60_000,
      budgetMs: 9.5 * 60_000,
    };
/** `text` as a whole number that is a multiple of `step`; exits with a message otherwise. */
function count(name: string, text: string, step = 1): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < step || n % step !== 0) {
    console.error(
      `${name}=${process.env[name]}: ${text === process.env[name] ? '' : `"${text}" `}must be a whole number${step > 1 ? ` of blocks of ${step} (${step}, ${2 * step}, …)` : ' above 0'}`,
    );
    process.exit(2);
  }
  return n;
}
/** A whole number from the environment that is a multiple of `step`; undefined when unset. */
function envCount(name: string, step = 1): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === '') return undefined;
  return count(name, text, step);
}
if (process.env.BENCH_N) {
  CONFIG.ns = process.env.BENCH_N.split(',').map((part) => count('BENCH_N', part.trim()));
}
CONFIG.concurrency = envCount('BENCH_CONCURRENCY') ?? CONFIG.concurrency;
// more paced changes: a longer window for a profile, or a steadier figure for an A/B
const pacedChangesSet = envCount('BENCH_PACED_CHANGES');
if (pacedChangesSet !== undefined) {
  CONFIG.paced.changes = pacedChangesSet;
  CONFIG.paced.fewer = pacedChangesSet;
}
/** Subscribers through the publish warm-up (runFanout), closed before any measurement. */
const WARM_SUBSCRIBERS =
  process.env.BENCH_WARM_SUBSCRIBERS === '0'
    ? 0
    : (envCount('BENCH_WARM_SUBSCRIBERS') ?? (QUICK ? 2 : 10));

/** The length of the paced series at N. */
function pacedChanges(n: number): number {
  return n >= CONFIG.paced.fewerFromN ? CONFIG.paced.fewer : CONFIG.paced.changes;
}
// unmeasured changes before the paced series (0: none, as until 2026-12-06, tenth)
if (process.env.BENCH_PACED_LEAD === '0') CONFIG.paced.lead = 0;
else CONFIG.paced.lead = envCount('BENCH_PACED_LEAD') ?? CONFIG.paced.lead;
// a shorter or longer warm-up (whole blocks), e.g. to compare against the earlier 2 000
CONFIG.warmPublishes = envCount('BENCH_WARM_PUBLISHES', CONFIG.warmBlock) ?? CONFIG.warmPublishes;
// paced changes to the subscribers before the scenarios (1: the earlier single warm-up change)
CONFIG.warmChanges = envCount('BENCH_WARM_CHANGES') ?? CONFIG.warmChanges;

const ALL_TARGETS: Target[] = [bareWsTarget, socketIoTarget, nchanTarget, oursTarget];
const wanted = process.env.BENCH_TARGETS?.split(',').map((name) => name.trim());
for (const name of wanted ?? []) {
  if (!ALL_TARGETS.some((t) => t.name === name)) {
    console.error(
      `BENCH_TARGETS=${process.env.BENCH_TARGETS}: no target "${name}" (${ALL_TARGETS.map((t) => t.name).join(', ')})`,
    );
    process.exit(2);
  }
}
const TARGETS = ALL_TARGETS.filter((t) => !wanted || wanted.includes(t.name));
const COLORS: Record<string, string> = {
  ws: '#1f77b4',
  socketio: '#ff7f0e',
  nchan: '#2ca02c',
  ours: '#d62728',
};

const t0 = Date.now();
/** Fan-out stops starting runs after this; the child benches must end by the suite deadline. */
const fanoutDeadline = t0 + CONFIG.fanoutBudgetMs;
const deadline = t0 + CONFIG.budgetMs;

function remainingMs(until: number): number {
  return until - Date.now();
}

/** A time bound of `wanted` ms, shortened to what is left before the suite deadline (≥ floorMs). */
function bounded(wanted: number, floorMs = 5_000): number {
  return Math.max(floorMs, Math.min(wanted, remainingMs(deadline)));
}

// ---------------------------------------------------------------------------------------
// Progress display: one line rewritten in place on a terminal, throttled lines otherwise.

const tty = process.stdout.isTTY === true;
let status = '';
let lastPrinted = 0;
let lastKey = '';

function stamp(): string {
  const s = Math.floor((Date.now() - t0) / 1000);
  return `[${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}]`;
}

function clearStatus(): void {
  if (tty && status) process.stdout.write('\r\x1b[K');
}

function log(message: string): void {
  clearStatus();
  process.stdout.write(`${stamp()} ${message}\n`);
  if (tty && status) process.stdout.write(status);
}

/** key: lines with a new key are printed at once off a terminal, others every 5 s. */
function progress(key: string, message: string): void {
  const line = `${stamp()} ${message}`;
  if (tty) {
    status = line.slice(0, (process.stdout.columns || 120) - 1);
    process.stdout.write(`\r\x1b[K${status}`);
  } else if (key !== lastKey || Date.now() - lastPrinted > 5000) {
    process.stdout.write(`${line}\n`);
    lastPrinted = Date.now();
    lastKey = key;
  }
}

function endProgress(): void {
  clearStatus();
  status = '';
}

// ---------------------------------------------------------------------------------------

/** Transpiles the bench's own modules so that servers and the load generator run on plain node. */
function transpileBench(): void {
  rmSync(BUILD, { recursive: true, force: true });
  const skip = new Set(['run.ts', 'routing.bench.ts', 'write-path.bench.ts']);
  for (const entry of readdirSync(BENCH, { withFileTypes: true, recursive: true })) {
    const file = join(entry.parentPath, entry.name);
    if (!entry.isFile() || !file.endsWith('.ts') || file.startsWith(RESULTS)) continue;
    if (skip.has(relative(BENCH, file))) continue;
    const out = ts.transpileModule(readFileSync(file, 'utf8'), {
      fileName: file,
      compilerOptions: {
        module: ts.ModuleKind.CommonJS,
        target: ts.ScriptTarget.ES2022,
        esModuleInterop: true,
      },
    });
    const dest = join(BUILD, relative(BENCH, file)).replace(/\.ts$/, '.js');
    mkdirSync(dirname(dest), { recursive: true });
    writeFileSync(dest, out.outputText);
  }
}

function checkFdLimits(warnings: string[]): number {
  const own = fdLimit();
  const maxN = Math.max(...CONFIG.ns);
  const children = Math.min(WANTED_FD_LIMIT, own.hard);
  log(
    `open files: soft ${own.soft}, hard ${own.hard}; servers and the load generator are ` +
      `spawned through 'ulimit -n ${WANTED_FD_LIMIT}' (or the hard limit): ${children}`,
  );
  if (own.soft < 2 * maxN + FD_SLACK) {
    const w =
      `ulimit -n is ${own.soft}, below 2×N+slack = ${2 * maxN + FD_SLACK} for N=${maxN}` +
      (children >= maxN + FD_SLACK
        ? `; fine here: server and load generator are separate processes, each needs N+slack = ${maxN + FD_SLACK} and gets ${children}`
        : `; each process gets only ${children} (< N+slack = ${maxN + FD_SLACK}): connections will fail. Raise the hard limit (root: ulimit -Hn 65536)`);
    warnings.push(w);
    log(`WARNING: ${w}`);
  }
  return children;
}

/**
 * Waits (bounded) until processes other than ours use less than BACKGROUND_WARN_PCT of a
 * core, sampled over QUIET_SAMPLE_MS (on a shared machine, a build or a test run next door
 * would otherwise be measured as well), and the server (`pids[0]`) has used less than
 * SERVER_IDLE_PCT over the last two samples. Returns the last sample of the others.
 */
let quietBudgetMs = CONFIG.quietBudgetMs;
// 300 ms since 2026-12-07, eighteenth (500 before): about 50 waits of two samples at least
// per suite, and the suite had run past its budget twice (its write-path bench cut short)
const QUIET_SAMPLE_MS = 300;

async function waitForQuiet(pids: number[], what: string, floorMs = 0): Promise<number> {
  const started = Date.now();
  // floorMs: waits that long at most even past the deadline or the budget (a sample that
  // needs the server idle, e.g. the heap once every client has gone)
  const until = Math.max(
    started + Math.min(floorMs, CONFIG.quietWaitMs),
    Math.min(fanoutDeadline, started + Math.min(CONFIG.quietWaitMs, quietBudgetMs)),
  );
  let serverIdleSamples = 0;
  for (;;) {
    const m0 = machineCpuMs();
    const own0 = pids.map((pid) => cpuMs(pid));
    const self0 = process.cpuUsage();
    await sleep(QUIET_SAMPLE_MS);
    const self = process.cpuUsage(self0);
    const ownEach = pids.map((pid, i) => cpuMs(pid) - own0[i]);
    const own = ownEach.reduce((sum, ms) => sum + ms, 0);
    const other = machineCpuMs().busy - m0.busy - own - (self.user + self.system) / 1000;
    const pct = (100 * Math.max(0, other)) / QUIET_SAMPLE_MS;
    const serverPct = (100 * ownEach[0]) / QUIET_SAMPLE_MS;
    serverIdleSamples = serverPct <= SERVER_IDLE_PCT ? serverIdleSamples + 1 : 0;
    if ((pct <= BACKGROUND_WARN_PCT && serverIdleSamples >= 2) || Date.now() >= until) {
      quietBudgetMs -= Date.now() - started;
      return pct;
    }
    progress(
      `${what} quiet`,
      pct > BACKGROUND_WARN_PCT
        ? `${what}: waiting for background load to settle (${Math.round(pct)}% of a core)`
        : `${what}: waiting for the server to go idle (${Math.round(serverPct)}% of a core)`,
    );
  }
}

/** bench/results/perf-<pid>-<scenario>.data (`perf report -i` it; see BENCH_PERF) */
function perfFile(pid: number, scenario: string): string {
  return join(RESULTS, `perf-${pid}-${scenario}.data`);
}

/**
 * Publishes `count` changes from `seq` on, one at a time, `intervalMs` apart (unmeasured:
 * warm-ups); the first failure's message, or '' when all went through.
 */
async function publishPaced(
  rt: RunningTarget,
  seq: number,
  count: number,
  intervalMs: number,
): Promise<string> {
  let failure = '';
  for (let k = 0; k < count; k++) {
    if (k > 0) await sleep(intervalMs);
    failure ||= await rt.publish(seq + k).then(
      () => '',
      (err: Error) => err.message,
    );
  }
  return failure;
}

async function runScenario(
  rt: RunningTarget,
  lg: Loadgen,
  scenario: 'burst' | 'paced',
  seqBase: number,
  changes: number,
  intervalMs: number,
  lead = 0,
): Promise<ScenarioResult> {
  // paced: `lead` changes at the same pace before the measured ones, not measured (the
  // load generator counts only what it is armed for), so that the series is measured in
  // its steady state: after an idle spell longer than TCP's retransmission timeout each
  // receiving socket ACKs its next 16 segments at once (Linux's quick-ACK mode), and on
  // one machine those ACKs cost the load generator's and the server's CPUs (bench/README.md)
  if (lead > 0) {
    await publishPaced(rt, seqBase - lead, lead, intervalMs);
    await sleep(intervalMs);
  }
  await lg.arm(seqBase, changes);
  // one open connection per change sent at once, as a publisher with a warm pool has them
  await openConnections(rt.base, intervalMs > 0 ? 1 : changes);
  const errors: string[] = [];
  // BENCH_PERF=<scenario>: the server's CPU (BENCH_PERF_PROCESS=loadgen: the load
  // generator's), kernel included, sampled over the scenario
  const perfPid = process.env.BENCH_PERF_PROCESS === 'loadgen' ? lg.pid : rt.pid;
  const perf =
    process.env.BENCH_PERF === scenario
      ? spawn(
          'perf',
          ['record', '-F', '999', '-g', '-p', String(perfPid), '-o', perfFile(perfPid, scenario)],
          { stdio: 'ignore' },
        )
      : null;
  if (perf) await sleep(500); // perf attaches
  // CPU of the server, of the load generator, of this process and of the whole machine
  // over the same window: what is left is other processes (background load on a shared box).
  const machine0 = machineCpuMs();
  const server0 = cpuMs(rt.pid);
  const loadgen0 = cpuMs(lg.pid);
  const serverRun0 = runTimeMs(rt.pid);
  // (each processTree scans all of /proc: read once here, for the totals' start and for
  // the per-change samples below)
  const serverTree = processTree(rt.pid);
  const loadgenTree = processTree(lg.pid);
  const serverWait0 = waitTimeMsOf(serverTree);
  const loadgenWait0 = waitTimeMsOf(loadgenTree);
  // paced: the server's and the load generator's waits sampled as each change is published
  // (and once all is delivered), so that a slow change can be matched with what took a
  // CPU from them in its interval; per thread, so that the waits of the thread doing the
  // work (the busiest) can be told from the sum, which also counts helpers waiting behind it
  const marks: { server: ThreadTimes; loadgen: ThreadTimes; steal: number }[] = [];
  const markWaits = (): void => {
    marks.push({
      server: threadTimesMs(serverTree),
      loadgen: threadTimesMs(loadgenTree),
      steal: machineCpuMs().steal,
    });
  };
  const self0 = process.cpuUsage();
  const start = Date.now();
  const sends: Promise<void>[] = [];
  for (let k = 0; k < changes; k++) {
    if (intervalMs > 0) {
      await sleep(start + k * intervalMs - Date.now());
      markWaits();
    }
    sends.push(
      rt.publish(seqBase + k).catch((err: Error) => void errors.push(err.message.slice(0, 200))),
    );
  }
  await Promise.all(sends);
  const res = await lg.collect(bounded(CONFIG.collectTimeoutMs));
  if (marks.length > 0) markWaits(); // the last change's interval ends with delivery
  if (perf) {
    perf.kill('SIGINT');
    await new Promise((resolve) => perf.once('exit', resolve));
  }
  const serverCpuMs = cpuMs(rt.pid) - server0;
  const loadgenCpuMs = cpuMs(lg.pid) - loadgen0;
  const serverRunMs = runTimeMs(rt.pid) - serverRun0;
  const serverWaitMs = waitTimeMs(rt.pid) - serverWait0;
  const loadgenWaitMs = waitTimeMs(lg.pid) - loadgenWait0;
  const perChange = (value: (mark: (typeof marks)[number]) => number): number[] | undefined =>
    marks.length > 1
      ? marks.slice(1).map((m, k) => Math.round((value(m) - value(marks[k])) * 100) / 100)
      : undefined;
  const self = process.cpuUsage(self0);
  const machine1 = machineCpuMs();
  const wallMs = Math.max(1, Date.now() - start);
  const otherCpuMs =
    machine1.busy - machine0.busy - serverCpuMs - loadgenCpuMs - (self.user + self.system) / 1000;
  const windowMs = res.deliveries > 0 ? (res.lastRecvUs - res.firstSentUs) / 1000 : 0;
  return {
    scenario,
    changes,
    intervalMs,
    clients: res.clients,
    expected: res.expected,
    deliveries: res.deliveries,
    duplicates: res.duplicates,
    dropped: res.dropped,
    windowMs,
    deliveriesPerSec: windowMs > 0 ? (res.deliveries * 1000) / windowMs : 0,
    latency: res.latency,
    worstPerChangeMs: res.worstPerChangeMs,
    bestPerChangeMs: res.bestPerChangeMs,
    serverCpuMs,
    cpuUsPerDelivery: res.deliveries > 0 ? (serverCpuMs * 1000) / res.deliveries : NaN,
    serverRunMs,
    cpuUsPerDeliveryExact: res.deliveries > 0 ? (serverRunMs * 1000) / res.deliveries : NaN,
    serverCpuPct: (100 * serverCpuMs) / wallMs,
    loadgenCpuPct: (100 * loadgenCpuMs) / wallMs,
    otherCpuPct: (100 * Math.max(0, otherCpuMs)) / wallMs,
    serverWaitMs,
    loadgenWaitMs,
    serverWaitPerChangeMs: perChange((m) => waitSumMs(m.server)),
    loadgenWaitPerChangeMs: perChange((m) => waitSumMs(m.loadgen)),
    serverBusiestWaitPerChangeMs: busiestThreadWaits(marks.map((m) => m.server))?.waits,
    loadgenBusiestWaitPerChangeMs: busiestThreadWaits(marks.map((m) => m.loadgen))?.waits,
    ...(marks.length > 1
      ? { serverThreads: threadShares(marks[0].server, marks[marks.length - 1].server) }
      : {}),
    stealMs: machine1.steal - machine0.steal,
    stealPerChangeMs: perChange((m) => m.steal),
    interruptCpuPct: (100 * (machine1.interrupts - machine0.interrupts)) / wallMs,
    bytesPerFrame: res.frames > 0 ? res.bytes / res.frames : NaN,
    changesPerFrame: res.frames > 0 ? res.deliveries / res.frames : NaN,
    publishErrors: [...new Set(errors)],
    ...(res.readDelay ? { loadgenReadDelay: res.readDelay } : {}),
  };
}

/**
 * What a paced change costs a server with nobody to deliver to, and what it spends while
 * nothing happens at all. The paced scenario pays both once per change whatever N is, so at
 * small N they, not the deliveries, decide its CPU per delivery. Once per target (at its
 * first N: without subscribers N makes no difference), after the warm-up publishes.
 * - idle: server CPU over IDLE_SAMPLE_MS without a request (timers, metrics, threads, and
 *   the garbage collection of what the warm-up left);
 * - paced publish: PACED_SAMPLES publishes at the paced scenario's interval, CPU over
 *   exactly that many intervals ÷ publishes, so the idle time between them is included as
 *   it is in the paced scenario (paced publish − idle × interval ≈ the request itself).
 * Both from the scheduler's run time (schedstat, ns) rather than utime+stime, whose 10 ms
 * steps and tick sampling would make a 3-second idle window read 0, 3.3 or 6.7 ms/s.
 */
// 3 s and 30 since 2026-12-07, eighteenth (5 s and 50 before): 16 s of the suite, which
// ran past its budget once with the warm-up subscribers (its write-path bench timed out)
const IDLE_SAMPLE_MS = 3000;
const PACED_SAMPLES = 30;

async function measureFixedCosts(
  rt: RunningTarget,
  run: FanoutRun,
  prepared: number,
  what: string,
): Promise<void> {
  progress(`${what} fixed`, `${what}: idle CPU, paced publishes (no subscribers)`);
  const idle0 = runTimeMs(rt.pid);
  await sleep(IDLE_SAMPLE_MS);
  run.idleCpuMsPerSec = ((runTimeMs(rt.pid) - idle0) * 1000) / IDLE_SAMPLE_MS;
  const interval = CONFIG.paced.intervalMs;
  const start = Date.now();
  const cpu0 = runTimeMs(rt.pid);
  for (let k = 0; k < PACED_SAMPLES; k++) {
    await sleep(Math.max(0, start + k * interval - Date.now()));
    await rt.publish(k % prepared);
  }
  await sleep(Math.max(0, start + PACED_SAMPLES * interval - Date.now()));
  run.publishPacedCpuUs = ((runTimeMs(rt.pid) - cpu0) * 1000) / PACED_SAMPLES;
}

async function runFanout(
  target: Target,
  n: number,
  ctx: SuiteContext,
  notes: string[],
  warnings: string[],
): Promise<FanoutRun> {
  const run: FanoutRun = { n, scenarios: [] };
  const what = `${target.label} N=${n}`;
  progress(`${what} start`, `${what}: starting server`);
  const rt = await target.start(ctx);
  for (const note of rt.notes) if (!notes.includes(note)) notes.push(note);
  let lg: Loadgen | null = null;
  let warmLg: Loadgen | null = null;
  try {
    const warmChanges = CONFIG.warmChanges;
    const prepared = warmChanges + CONFIG.burst + CONFIG.paced.lead + pacedChanges(n);
    await rt.prepare(prepared);
    // Steady state, not JIT warm-up: the publish path (ours: HTTP, validation, the
    // transaction, capture) runs a while before anyone subscribes, as in a server that has
    // been up for some minutes. Ours needs 3 000 to 4 000: V8 optimizes Nest, Express and
    // TypeORM in waves, and its server CPU per PATCH falls from about 4 ms over the first
    // 500 to about 1.5 ms (at 2 000 it is still about 2 ms; bench/README.md). The CPU per
    // publish of each block of warmBlock is kept (the report's warm-up curve), so that a
    // run shows whether its target had levelled off. No subscriber: nothing is delivered.
    // The last 20 % give the publish path's own CPU cost, which a paced change pays once
    // whatever N is (ours: REST, validation, the transaction, capture; the peers:
    // receiving the POST).
    // A few subscribers through that warm-up's first 80 % (BENCH_WARM_SUBSCRIBERS, default
    // 10; 0: none, as until 2026-12-07, eighteenth), in a load generator of their own,
    // closed before anything is measured, at each target's first N (where a change's fixed
    // costs weigh most per delivery; at every N they took 17 s of the suite's ten minutes):
    // the code a server runs once per change to deliver it (ours: routing, serialization,
    // framing, the write loop's set-up) is then optimized as in a server that has delivered
    // for minutes. Without them it ran a few dozen times before
    // the paced series, and V8 was still compiling it through the series (ours at N = 10
    // over 600 paced changes: its compiler threads 0.5 ms per change, about 90 functions
    // optimized after the clients connected; docs/performance.md). Same for every target.
    if (WARM_SUBSCRIBERS > 0 && n === CONFIG.ns[0]) {
      progress(`${what} warm clients`, `${what}: ${WARM_SUBSCRIBERS} warm-up subscribers`);
      warmLg = await Loadgen.start(BUILD, () => undefined);
      const warmConn = await warmLg.connect(
        rt.client,
        WARM_SUBSCRIBERS,
        CONFIG.concurrency,
        bounded(CONFIG.connectTimeoutMs),
      );
      if (warmConn.connected === 0) {
        throw new Error(`no warm-up subscriber connected: ${warmConn.errors.join('; ')}`);
      }
    }
    progress(
      `${what} warmup`,
      `${what}: ${CONFIG.warmPublishes} publishes, ${warmLg ? WARM_SUBSCRIBERS : 'no'} subscribers`,
    );
    const timed = Math.ceil(CONFIG.warmPublishes * 0.2);
    let cpu0 = 0;
    let block0 = runTimeMs(rt.pid);
    run.warmupCurveUs = [];
    for (let i = 0; i < CONFIG.warmPublishes; i++) {
      if (i === CONFIG.warmPublishes - timed) {
        // the timed publishes reach nobody ("publish CPU µs, 0 subs")
        if (warmLg) {
          await warmLg.close();
          warmLg = null;
          await sleep(300); // the closes handled
        }
        cpu0 = runTimeMs(rt.pid);
      }
      await rt.publish(i % prepared);
      if ((i + 1) % CONFIG.warmBlock === 0) {
        const now = runTimeMs(rt.pid);
        run.warmupCurveUs.push(((now - block0) * 1000) / CONFIG.warmBlock);
        block0 = now;
      }
    }
    run.publishCpuUs = ((runTimeMs(rt.pid) - cpu0) * 1000) / timed;
    if (n === CONFIG.ns[0]) {
      // two columns of the connect table: a failure here costs them, not the whole run
      await measureFixedCosts(rt, run, prepared, what).catch((err: Error) => {
        const w = `${what}: idle / paced publish CPU not measured: ${err.message}`;
        warnings.push(w);
        log(`WARNING: ${w}`);
      });
    }
    // RSS around the connect, read as it is; the heap is sampled after the scenarios (below)
    const rssBeforeConnect = rssBytes(rt.pid);
    lg = await Loadgen.start(BUILD, (phase, done, total) =>
      progress(`${what} ${phase}`, `${what}: ${phase} ${done}/${total}`),
    );
    loadgenReads.add(lg.reader);
    for (const [who, pid] of [
      ['server', rt.pid],
      ['load generator', lg.pid],
    ] as const) {
      const lim = fdLimit(pid).soft;
      if (lim < n + FD_SLACK) {
        const w = `${target.label}: ${who} has ${lim} open files allowed, N=${n} needs ${n + FD_SLACK}`;
        warnings.push(w);
        log(`WARNING: ${w}`);
      }
    }
    progress(`${what} connect`, `${what}: connecting`);
    const conn = await lg.connect(
      rt.client,
      n,
      CONFIG.concurrency,
      bounded(CONFIG.connectTimeoutMs),
    );
    run.connect = {
      connected: conn.connected,
      failed: conn.failed,
      elapsedMs: conn.elapsedMs,
      perSec: conn.perSec,
      errors: conn.errors,
    };
    if (conn.connected === 0) throw new Error(`no client subscribed: ${conn.errors.join('; ')}`);
    await sleep(300);
    const rssAfterConnect = rssBytes(rt.pid);

    // Warm-up of the delivery path, as the publish path's above: a short paced series, not
    // measured (the fan-out loops run in V8's lower tiers until it has optimized them, which
    // takes a few changes); also proves that delivery works at all.
    progress(`${what} warmup`, `${what}: ${warmChanges} warm-up change(s)`);
    await lg.arm(0, warmChanges);
    const failed = await publishPaced(rt, 0, warmChanges, CONFIG.paced.intervalMs);
    const publishError = failed ? ` (publishing it failed: ${failed})` : '';
    const warm = await lg.collect(bounded(Math.min(10_000, CONFIG.collectTimeoutMs)));
    if (warm.deliveries === 0) {
      throw new Error(
        `the warm-up changes reached none of ${warm.clients} subscribers${publishError}`,
      );
    }
    if (!rt.alive()) throw new Error(`server exited:\n${rt.output()}`);

    await waitForQuiet([rt.pid, lg.pid], what);
    progress(`${what} burst`, `${what}: burst`);
    run.scenarios.push(await runScenario(rt, lg, 'burst', warmChanges, CONFIG.burst, 0));
    await waitForQuiet([rt.pid, lg.pid], what);
    progress(`${what} paced`, `${what}: paced`);
    run.scenarios.push(
      await runScenario(
        rt,
        lg,
        'paced',
        warmChanges + CONFIG.burst + CONFIG.paced.lead,
        pacedChanges(n),
        CONFIG.paced.intervalMs,
        CONFIG.paced.lead,
      ),
    );
    // Heap per connection, after the scenarios: a sample forces a full GC, and V8 then drops
    // the optimized code that embeds objects that died; taken before them (as until
    // 2026-12-06), it made the paced series measure the recompilation of every Node
    // target's publish path (ours: about 1.1 ms of TurboFan per change at N = 1 000), a cost
    // of the bench, not of serving. With the clients, then once they have all gone: the
    // difference is what the connections hold, not what outlives them (compiled code,
    // bounded caches).
    progress(`${what} memory`, `${what}: heap with the clients, then without`);
    await waitForQuiet([rt.pid, lg.pid], what);
    const withClients = await rt.memory();
    await lg.close();
    lg = null;
    // even past the fan-out deadline: sampled while the server still closed 10 000 sockets,
    // the heap "without" them read 76-78 MB instead of 38 in two runs of the eighteenth
    // session whose last fan-out run went past the deadline (heap per connection ~900 B)
    await waitForQuiet([rt.pid], what, 5000);
    const without = await rt.memory();
    run.memory = {
      before: { ...without, rssBytes: rssBeforeConnect },
      after: { ...withClients, rssBytes: rssAfterConnect },
      heapPerConnBytes:
        without.heapUsedBytes !== null && withClients.heapUsedBytes !== null
          ? (withClients.heapUsedBytes - without.heapUsedBytes) / conn.connected
          : null,
      rssPerConnBytes: (rssAfterConnect - rssBeforeConnect) / conn.connected,
    };
    for (const s of run.scenarios) {
      if (s.otherCpuPct > BACKGROUND_WARN_PCT) {
        const w =
          `${what} ${s.scenario}: other processes used ${Math.round(s.otherCpuPct)}% of a core ` +
          'meanwhile; these figures are disturbed';
        warnings.push(w);
        log(`WARNING: ${w}`);
      }
    }
  } catch (err) {
    run.error = String((err as Error).message ?? err);
  } finally {
    progress(`${what} stop`, `${what}: stopping`);
    await lg?.close().catch(() => undefined);
    await warmLg?.close().catch(() => undefined);
    await rt.stop();
  }
  endProgress();
  const last = run.scenarios.map(
    (s) =>
      `${s.scenario} ${Math.round(s.deliveriesPerSec).toLocaleString('en-US')}/s p99 ${s.latency.p99Ms.toFixed(1)} ms`,
  );
  log(
    `${what}: ${run.connect ? `${Math.round(run.connect.perSec)} conn/s` : ''} ${last.join(', ')}` +
      (run.error ? ` ERROR ${run.error.split('\n')[0]}` : ''),
  );
  return run;
}

/** The child benches' own settings in quick mode (routing.bench.ts, write-path.bench.ts). */
const QUICK_CHILD_ENV = { ROUTING_CHANGES: '200000', ROUTING_RUNS: '5', WRITE_BENCH_MS: '500' };

async function runChildBench(
  name: string,
  file: string,
  shorter: Record<string, string> = {},
): Promise<ChildBench> {
  const rel = `bench/${file}`;
  if (!existsSync(join(ROOT, rel))) {
    log(`${name}: ${rel} does not exist: not yet measured`);
    return { name, file: rel, status: 'absent', elapsedMs: 0, output: '' };
  }
  if (process.env.BENCH_FANOUT_ONLY === '1') {
    log(`${name}: skipped (BENCH_FANOUT_ONLY=1)`);
    return { name, file: rel, status: 'skipped', elapsedMs: 0, output: '' };
  }
  const timeoutMs = bounded(CONFIG.childTimeoutMs, 20_000);
  log(`${name}: running ${rel} (bound ${Math.round(timeoutMs / 1000)} s)`);
  const res = await runToCompletion(
    process.execPath,
    ['-r', 'ts-node/register/transpile-only', '-r', 'tsconfig-paths/register', rel],
    {
      cwd: ROOT,
      // quick: shorter measurements, so that both children finish inside the smoke run's
      // bound (with their full defaults the write path was cut off); set ones win
      env: QUICK ? { ...QUICK_CHILD_ENV, ...process.env } : { ...process.env, ...shorter },
      timeoutMs,
      onLine: (line) => log(`  ${name} | ${line}`),
    },
  );
  const status = res.timedOut ? 'timeout' : res.code === 0 ? 'ok' : 'failed';
  if (status !== 'ok') log(`${name}: ${status} (exit ${res.code})`);
  const shortened =
    Object.keys(shorter).length > 0
      ? Object.entries(shorter)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ')
      : undefined;
  return { name, file: rel, status, elapsedMs: res.elapsedMs, output: res.output, shortened };
}

function ratios(targets: TargetResult[]): Ratio[] {
  const ours = targets.find((t) => t.name === 'ours' && t.status === 'ok');
  if (!ours) return [];
  const out: Ratio[] = [];
  for (const peer of targets) {
    if (peer === ours || peer.status !== 'ok') continue;
    for (const run of ours.runs) {
      const peerRun = peer.runs.find((r) => r.n === run.n);
      for (const s of run.scenarios) {
        const p = peerRun?.scenarios.find((x) => x.scenario === s.scenario);
        if (!p) continue;
        out.push({
          peer: peer.name,
          n: run.n,
          scenario: s.scenario,
          deliveriesPerSec: s.deliveriesPerSec / p.deliveriesPerSec,
          cpuPerDelivery: s.cpuUsPerDelivery / p.cpuUsPerDelivery,
          cpuPerDeliveryExact: (s.cpuUsPerDeliveryExact ?? NaN) / (p.cpuUsPerDeliveryExact ?? NaN),
        });
      }
    }
  }
  return out;
}

/** First and last line of a multi-line reason (the message, then the output's last word). */
function oneLine(reason: string): string {
  const lines = reason.split('\n').filter((l) => l.trim() !== '');
  return lines.length > 1 ? `${lines[0]} … ${lines[lines.length - 1].trim()}` : (lines[0] ?? '');
}

function noRatioReason(targets: TargetResult[]): string {
  return targets.some((t) => t.name === 'ours' && t.status === 'ok')
    ? 'no peer ran'
    : '"ours" did not run';
}

function latencyPanels(targets: TargetResult[]): LatencyPanel[] {
  const panels: LatencyPanel[] = [];
  for (const scenario of ['burst', 'paced'] as const) {
    for (const n of CONFIG.ns) {
      const series = [];
      for (const t of targets) {
        const s = t.runs.find((r) => r.n === n)?.scenarios.find((x) => x.scenario === scenario);
        if (s && s.latency.count > 0) {
          series.push({
            label: t.label,
            color: COLORS[t.name] ?? '#555',
            histogram: s.latency.histogram,
          });
        }
      }
      const title =
        scenario === 'burst'
          ? `burst of ${CONFIG.burst}, N=${n}`
          : `${pacedChanges(n)} changes ${CONFIG.paced.intervalMs} ms apart, N=${n}`;
      panels.push({ title, series });
    }
  }
  return panels;
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const machine = machineInfo();
  const { commit, dirty } = gitCommit(ROOT);
  const warnings: string[] = [];
  log(
    `bench ${QUICK ? '(quick) ' : ''}commit ${commit}${dirty ? ' (dirty)' : ''}; ${machine.nproc} CPU ${machine.cpuModel}; ` +
      `Node ${machine.node}; N = ${CONFIG.ns.join(', ')}`,
  );
  if (machine.nproc < 2)
    warnings.push(`only ${machine.nproc} CPU: server and load generator share it`);
  const pinned = pinSuite();
  log(pinned);
  const childFd = checkFdLimits(warnings);
  mkdirSync(RESULTS, { recursive: true });
  transpileBench();

  const ctx: SuiteContext = { root: ROOT, buildDir: BUILD, quick: QUICK, log };
  const targets: TargetResult[] = [];
  const active: [Target, TargetResult][] = [];
  for (const target of TARGETS) {
    const result: TargetResult = {
      name: target.name,
      label: target.label,
      status: 'ok',
      notes: [],
      runs: [],
    };
    targets.push(result);
    const reason = await target.check(ctx);
    if (reason) {
      result.status = 'skipped';
      result.reason = reason;
      log(`${target.label}: skipped: ${reason}`);
    } else {
      active.push([target, result]);
    }
  }
  // N in the outer loop: when the time budget runs out, the largest N goes for every target
  // alike, and all targets see the machine in the same period.
  for (const n of CONFIG.ns) {
    for (const [target, result] of active) {
      if (result.status !== 'ok') continue;
      if (remainingMs(fanoutDeadline) <= 0) {
        const w = `${target.label} N=${n}: skipped, the suite's time budget is spent`;
        warnings.push(w);
        log(w);
        continue;
      }
      try {
        result.runs.push(await runFanout(target, n, ctx, result.notes, warnings));
      } catch (err) {
        // The server did not start: no point trying larger N.
        endProgress();
        result.status = result.runs.length === 0 ? 'skipped' : 'failed';
        result.reason = String((err as Error).message ?? err);
        log(
          `${target.label}: ${result.status}: ${result.reason.split('\n').slice(0, 12).join('\n    ')}`,
        );
      }
    }
  }
  for (const [, result] of active) {
    if (result.status === 'ok' && result.runs.every((r) => r.scenarios.length === 0)) {
      result.status = 'failed';
      result.reason = result.runs.map((r) => `N=${r.n}: ${r.error ?? 'no result'}`).join('; ');
    }
  }

  const fit = QUICK
    ? { routing: {}, writePath: {}, scale: 1 }
    : childSettings(remainingMs(deadline), process.env);
  if (fit.scale < 1) {
    const w = `routing and write path shortened to fit the suite's budget (${Math.round(remainingMs(deadline) / 1000)} s left): ${JSON.stringify({ ...fit.routing, ...fit.writePath })}`;
    warnings.push(w);
    log(w);
  }
  const routing = await runChildBench('routing', 'routing.bench.ts', fit.routing);
  const writePath = await runChildBench('write path', 'write-path.bench.ts', fit.writePath);

  const results: Results = {
    format: 1,
    commit,
    dirty,
    startedAt: startedAt.toISOString(),
    durationS: (Date.now() - t0) / 1000,
    quick: QUICK,
    machine,
    fdLimit: { ...fdLimit(), children: childFd },
    placement: pinned,
    loadgenReader: `load generator: ws clients, whose frames, once subscribed, are read ${[...loadgenReads].join('; in some runs ') || 'by no run'} (socket.io-client reads Socket.IO's)`,
    config: {
      ns: CONFIG.ns,
      burst: CONFIG.burst,
      paced: CONFIG.paced,
      concurrency: CONFIG.concurrency,
      payloadBytes: Buffer.byteLength(changePayload(0, nowUs())),
      warmPublishes: CONFIG.warmPublishes,
      warmChanges: CONFIG.warmChanges,
    },
    targets,
    ratios: ratios(targets),
    routing,
    writePath,
    warnings,
  };

  const name = startedAt.toISOString().replace(/[:.]/g, '-');
  const svgName = `${name}-latency.svg`;
  const panels = latencyPanels(targets);
  const hasSvg = panels.some((p) => p.series.length > 0);
  if (hasSvg) {
    writeFileSync(
      join(RESULTS, svgName),
      percentileSvg(
        `commit → receive latency (${commit}${QUICK ? ', quick' : ''})`,
        panels,
        CONFIG.ns.length,
      ),
    );
  }
  writeFileSync(join(RESULTS, `${name}.json`), JSON.stringify(results, null, 2) + '\n');
  writeFileSync(
    join(RESULTS, `${name}.md`),
    markdownReport(results, hasSvg ? svgName : null, noRatioReason(targets)),
  );

  console.log(
    '\nFan-out (deliveries/s: first publish → last receive; CPU: server utime+stime ÷ deliveries)\n',
  );
  console.log(textTable(fanoutTable(results)));
  console.log('\nConnect + authenticate + subscribe, and memory per connection\n');
  console.log(textTable(connectTable(results)));
  console.log('\nRatios (ours ÷ peer)\n');
  console.log(
    results.ratios.length > 0 ? textTable(ratioTable(results)) : 'none: "ours" did not run',
  );
  for (const t of targets) {
    if (t.status !== 'ok') console.log(`\n${t.label}: ${t.status}: ${oneLine(t.reason ?? '')}`);
  }
  console.log(
    `\nwrite path: ${writePath.status === 'absent' ? 'not yet measured' : writePath.status}`,
  );
  for (const w of warnings) console.log(`WARNING: ${w}`);
  console.log(
    `\n${results.durationS.toFixed(0)} s. Report: ${relative(ROOT, join(RESULTS, `${name}.md`))}` +
      ` (+ .json${hasSvg ? `, ${svgName}` : ''})`,
  );
}

main().catch((err) => {
  endProgress();
  console.error(err);
  process.exit(1);
});
