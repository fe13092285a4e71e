/** Result types and their rendering: the console table and the markdown report. */
import type { LatencySummary, ReadDelay } from './common';
import type { MachineInfo, ThreadShare } from './proc';
import type { MemorySample } from './target';

export interface ScenarioResult {
  scenario: 'burst' | 'paced';
  changes: number;
  intervalMs: number;
  clients: number;
  expected: number;
  deliveries: number;
  duplicates: number;
  dropped: number;
  /** From the first publish to the last receive. */
  windowMs: number;
  deliveriesPerSec: number;
  latency: LatencySummary;
  /** The slowest delivery of each change, in publish order, ms (JSON only). */
  worstPerChangeMs?: (number | null)[];
  /** The fastest delivery of each change, ms (JSON only). */
  bestPerChangeMs?: (number | null)[];
  serverCpuMs: number;
  cpuUsPerDelivery: number;
  /**
   * The server's CPU over the same window from its threads' schedstat (ns, where
   * utime+stime counts 10 ms ticks), and ÷ deliveries: the same time, without the
   * ticks' steps (at N = 1 000 paced, 0.5 µs per delivery). Threads that ended within the
   * window drop out of it. Absent in reports from before the ninth session.
   */
  serverRunMs?: number;
  cpuUsPerDeliveryExact?: number;
  /** CPU over the window (first publish → all delivered), % of one core, from /proc. */
  serverCpuPct: number;
  loadgenCpuPct: number;
  /** Other processes on the machine (background load), % of one core. */
  otherCpuPct: number;
  /**
   * Time the server's threads (the load generator's) were ready to run but waited for a
   * CPU held by something else, over the window, ms (schedstat run_delay; NaN without it)
   */
  serverWaitMs: number;
  loadgenWaitMs: number;
  /**
   * paced: the same, over each change's interval (its publish to the next; the last one's
   * to the end of delivery), ms. Where deliveries outlast the interval (bare `ws` at
   * N = 10 000), an interval's waits are no longer its change's alone.
   */
  serverWaitPerChangeMs?: number[];
  loadgenWaitPerChangeMs?: number[];
  /**
   * paced: the waits of the busiest thread alone (the server's, the load generator's: the
   * thread that ran longest over the series, a Node process's main thread), per change
   * as above. The sums above also count helper threads waiting behind it (V8's GC and
   * compiler threads share the server's pinned CPU), which delays no delivery. Absent in
   * reports from before 2026-12-07, thirteenth.
   */
  serverBusiestWaitPerChangeMs?: number[];
  /** paced: each server thread's run and wait over the series, busiest first (threadShares) */
  serverThreads?: ThreadShare[];
  loadgenBusiestWaitPerChangeMs?: number[];
  /**
   * Time the hypervisor ran something else instead of this VM's CPUs, all CPUs summed, over
   * the window, ms (/proc/stat `steal`, 10 ms ticks): time no wait shows. Per change as
   * the waits (paced). Absent in reports from before 2026-12-06, tenth.
   */
  stealMs?: number;
  stealPerChangeMs?: number[];
  /** irq + softirq time machine-wide (loopback TCP), % of one core. */
  interruptCpuPct: number;
  /**
   * With kernel receive times (BENCH_LOADGEN_TIMES=kernel): the load generator's read delay,
   * which the latencies leave out (common.ts, ReadDelay). Absent with read times and in
   * reports from before 2026-12-07, sixteenth; without `unstamped` in those from before
   * `768d2a7`.
   */
  loadgenReadDelay?: Omit<ReadDelay, 'unstamped'> & { unstamped?: number };
  bytesPerFrame: number;
  changesPerFrame: number;
  publishErrors: string[];
}

export interface FanoutRun {
  n: number;
  connect?: {
    connected: number;
    failed: number;
    elapsedMs: number;
    perSec: number;
    errors: string[];
  };
  memory?: {
    before: MemorySample;
    after: MemorySample;
    heapPerConnBytes: number | null;
    rssPerConnBytes: number;
  };
  /** server CPU µs per publish while nobody is subscribed (the publish path alone) */
  publishCpuUs?: number;
  /** server CPU µs per publish in each block of the warm-up publishes, in order */
  warmupCurveUs?: number[];
  /**
   * server CPU µs per publish at the paced scenario's interval, idle time between included,
   * nobody subscribed: what a paced change costs before any delivery (first N only)
   */
  publishPacedCpuUs?: number;
  /** server CPU ms per second while nothing happens, nobody subscribed (first N only) */
  idleCpuMsPerSec?: number;
  scenarios: ScenarioResult[];
  error?: string;
}

export interface TargetResult {
  name: string;
  label: string;
  status: 'ok' | 'skipped' | 'failed';
  /** Why it was skipped or failed. */
  reason?: string;
  notes: string[];
  runs: FanoutRun[];
}

export interface ChildBench {
  name: string;
  file: string;
  status: 'ok' | 'absent' | 'skipped' | 'failed' | 'timeout';
  elapsedMs: number;
  output: string;
  /** Set when the suite gave it shorter settings than its defaults, to fit its budget. */
  shortened?: string;
}

export interface Ratio {
  peer: string;
  n: number;
  scenario: string;
  /** ours ÷ peer deliveries/s (above 1: ours delivers faster). */
  deliveriesPerSec: number;
  /** ours ÷ peer server CPU per delivery (above 1: ours costs more). */
  cpuPerDelivery: number;
  /** the same from schedstat (cpuUsPerDeliveryExact); NaN when a side lacks it */
  cpuPerDeliveryExact?: number;
}

export interface Results {
  format: 1;
  commit: string;
  dirty: boolean;
  startedAt: string;
  durationS: number;
  quick: boolean;
  machine: MachineInfo;
  fdLimit: { soft: number; hard: number; children: number };
  /** where the server and the load generator ran (cpus.ts) */
  placement: string;
  /** how the load generator read frames (absent: before the FrameReader, ws's Receiver) */
  loadgenReader?: string;
  config: {
    ns: number[];
    burst: number;
    /** from N = fewerFromN on, `fewer` changes (absent: before 2026-12-07, thirteenth; JSON has no Infinity: null) */
    paced: { changes: number; intervalMs: number; fewerFromN?: number | null; fewer?: number };
    concurrency: number;
    payloadBytes: number;
    /** publishes before anyone subscribes, per target and N */
    warmPublishes: number;
    /** paced changes to the subscribers before the scenarios (absent: before d30b13e, 1 unless BENCH_WARM_CHANGES said otherwise) */
    warmChanges?: number;
  };
  targets: TargetResult[];
  ratios: Ratio[];
  routing: ChildBench;
  writePath: ChildBench;
  warnings: string[];
}

// ---------------------------------------------------------------------------------------

/** ` (50 from N = 10,000)` where larger N have a shorter paced series, else nothing. */
function pacedFewer(paced: Results['config']['paced']): string {
  const { fewerFromN, fewer } = paced;
  if (typeof fewerFromN !== 'number' || !Number.isFinite(fewerFromN) || fewer === undefined)
    return '';
  return fewer === paced.changes ? '' : ` (${fewer} from N = ${num(fewerFromN)})`;
}

function num(v: number | null | undefined, digits = 0): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  return v.toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function ms(v: number): string {
  if (!Number.isFinite(v)) return '–';
  return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
}

function kib(bytes: number | null | undefined): string {
  return bytes === null || bytes === undefined ? '–' : num(bytes / 1024, 1);
}

function ratio(v: number): string {
  return Number.isFinite(v) ? `×${v.toFixed(2)}` : '–';
}

export interface Table {
  headers: string[];
  rows: string[][];
  /** Columns aligned right (numbers). */
  right: boolean[];
}

export function fanoutTable(r: Results): Table {
  const headers = [
    'target',
    'N',
    'scenario',
    'delivered',
    'deliv/s',
    'p50 ms',
    'p99 ms',
    'max ms',
    'CPU µs/deliv',
    'server CPU',
    'loadgen CPU',
    'waited ms srv / lg',
    'steal ms',
    'B/frame',
  ];
  const rows: string[][] = [];
  for (const t of r.targets) {
    for (const run of t.runs) {
      for (const s of run.scenarios) {
        const missing = s.expected - s.deliveries;
        rows.push([
          t.label,
          num(run.n),
          s.scenario === 'burst' ? `burst ${s.changes}` : `paced ${s.changes}×${s.intervalMs}ms`,
          missing === 0 ? num(s.deliveries) : `${num(s.deliveries)} / ${num(s.expected)}`,
          num(s.deliveriesPerSec),
          ms(s.latency.p50Ms),
          ms(s.latency.p99Ms),
          ms(s.latency.maxMs),
          num(s.cpuUsPerDelivery, 1),
          `${num(s.serverCpuPct)}%`,
          `${num(s.loadgenCpuPct)}%`,
          `${num(s.serverWaitMs, 1)} / ${num(s.loadgenWaitMs, 1)}`,
          s.stealMs === undefined ? '' : num(s.stealMs),
          num(s.bytesPerFrame),
        ]);
      }
      if (run.error)
        rows.push([t.label, num(run.n), 'error', run.error.split('\n')[0].slice(0, 90)]);
    }
  }
  return {
    headers,
    rows,
    right: headers.map((_, i) => i !== 0 && i !== 2),
  };
}

/**
 * The load generator's read delay per scenario (where it was measured): what kernel receive
 * times leave out of the latencies.
 */
export function readDelayTable(r: Results): Table {
  const headers = [
    'target',
    'N',
    'scenario',
    'reads',
    'mean µs',
    'longest ms',
    'reads without a timestamp',
  ];
  const rows: string[][] = [];
  for (const t of r.targets) {
    for (const run of t.runs) {
      for (const s of run.scenarios) {
        const d = s.loadgenReadDelay;
        if (!d || d.reads + (d.unstamped ?? 0) === 0) continue;
        rows.push([
          t.label,
          num(run.n),
          s.scenario,
          num(d.reads),
          num(d.meanUs),
          ms(d.maxUs / 1000),
          num(d.unstamped ?? 0),
        ]);
      }
    }
  }
  return { headers, rows, right: headers.map((_, i) => i !== 0 && i !== 2) };
}

/**
 * The paced series' three slowest changes per target and N (by their last delivery), with
 * how long the server and the load generator waited for a CPU in each one's interval (all
 * their threads, then the busiest thread of each alone: server / load generator), and the
 * median change for comparison: tells a change slowed by something else on the machine (a
 * wait of the thread doing the work) from one the server was slow to deliver.
 */
export function slowChangesTable(r: Results): Table {
  const headers = [
    'target',
    'N',
    'change',
    'last delivery ms',
    'server waited ms',
    'loadgen waited ms',
    'their busiest thread waited ms',
    'steal ms',
  ];
  const rows: string[][] = [];
  for (const t of r.targets) {
    for (const run of t.runs) {
      for (const s of run.scenarios) {
        const worst = s.worstPerChangeMs;
        if (s.scenario !== 'paced' || !worst || !s.serverWaitPerChangeMs) continue;
        const order = worst
          .map((v, k) => [v ?? Infinity, k] as const)
          .sort((a, b) => b[0] - a[0])
          .map(([, k]) => k);
        const row = (label: string, k: number): string[] => [
          t.label,
          num(run.n),
          label,
          worst[k] === null ? 'not delivered' : ms(worst[k] as number),
          num(s.serverWaitPerChangeMs?.[k], 2),
          num(s.loadgenWaitPerChangeMs?.[k], 2),
          s.serverBusiestWaitPerChangeMs && s.loadgenBusiestWaitPerChangeMs
            ? `${num(s.serverBusiestWaitPerChangeMs[k], 2)} / ${num(s.loadgenBusiestWaitPerChangeMs[k], 2)}`
            : '',
          s.stealPerChangeMs ? num(s.stealPerChangeMs[k]) : '',
        ];
        for (const k of order.slice(0, 3)) rows.push(row(`#${k + 1}`, k));
        const delivered = order.filter((k) => worst[k] !== null);
        if (delivered.length === 0) continue;
        const median = delivered[Math.floor(delivered.length / 2)];
        // (a series of five or fewer: the median may be among the three above)
        if (!order.slice(0, 3).includes(median)) rows.push(row(`#${median + 1} (median)`, median));
      }
    }
  }
  return { headers, rows, right: headers.map((_, i) => i !== 0 && i !== 2) };
}

export function connectTable(r: Results): Table {
  const headers = [
    'target',
    'N',
    'subscribed',
    'failed',
    'conn/s',
    'heap/conn KiB',
    'RSS/conn KiB',
    'RSS before MiB',
    'RSS after MiB',
    'publish CPU µs, 0 subs',
    'paced publish CPU µs, 0 subs',
    'idle CPU ms/s',
  ];
  const rows: string[][] = [];
  for (const t of r.targets) {
    for (const run of t.runs) {
      if (!run.connect) continue;
      const m = run.memory;
      rows.push([
        t.label,
        num(run.n),
        num(run.connect.connected),
        num(run.connect.failed),
        num(run.connect.perSec),
        kib(m?.heapPerConnBytes),
        kib(m?.rssPerConnBytes),
        m ? num(m.before.rssBytes / 1048576, 1) : '–',
        m ? num(m.after.rssBytes / 1048576, 1) : '–',
        run.publishCpuUs === undefined ? '–' : num(run.publishCpuUs),
        run.publishPacedCpuUs === undefined ? '–' : num(run.publishPacedCpuUs),
        run.idleCpuMsPerSec === undefined ? '–' : num(run.idleCpuMsPerSec, 1),
      ]);
    }
  }
  return { headers, rows, right: headers.map((_, i) => i !== 0) };
}

export function ratioTable(r: Results): Table {
  const rows = r.ratios.map((x) => [
    `ours / ${x.peer}`,
    num(x.n),
    x.scenario,
    ratio(x.deliveriesPerSec),
    ratio(x.cpuPerDelivery),
    ratio(x.cpuPerDeliveryExact ?? NaN),
  ]);
  return {
    headers: ['ratio', 'N', 'scenario', 'deliveries/s', 'CPU/delivery', 'CPU/delivery, schedstat'],
    rows,
    right: [false, true, false, true, true, true],
  };
}

export function textTable(t: Table): string {
  const widths = t.headers.map((h, i) =>
    Math.max(h.length, ...t.rows.map((r) => (r[i] ?? '').length)),
  );
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (t.right[i] ? (c ?? '').padStart(widths[i]) : (c ?? '').padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(t.headers), widths.map((w) => '-'.repeat(w)).join('  '), ...t.rows.map(line)].join(
    '\n',
  );
}

export function markdownTable(t: Table): string {
  const cells = (r: string[]): string =>
    `| ${t.headers.map((_, i) => (r[i] ?? '').replace(/\|/g, '\\|')).join(' | ')} |`;
  return [
    cells(t.headers),
    `|${t.right.map((r) => (r ? ' ---: ' : ' --- ')).join('|')}|`,
    ...t.rows.map(cells),
  ].join('\n');
}

function childSection(c: ChildBench): string {
  if (c.status === 'absent') return `\`${c.file}\` does not exist: not yet measured.\n`;
  if (c.status === 'skipped') return `\`${c.file}\`: skipped (\`BENCH_FANOUT_ONLY=1\`).\n`;
  const head =
    c.status === 'ok'
      ? `\`${c.file}\`, ${num(c.elapsedMs / 1000, 1)} s:`
      : `\`${c.file}\` **${c.status}** after ${num(c.elapsedMs / 1000, 1)} s:`;
  const shortened = c.shortened ? ` (shortened to fit the suite's budget: ${c.shortened})` : '';
  return `${head}${shortened}\n\n\`\`\`text\n${c.output.trim()}\n\`\`\`\n`;
}

export function markdownReport(r: Results, svgFile: string | null, noRatio: string): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(
    `# Benchmark ${r.startedAt}${r.quick ? ' (quick)' : ''}`,
    '',
    `- commit: \`${r.commit}\`${r.dirty ? ' (working tree has uncommitted changes)' : ''}`,
    `- machine: ${m.nproc} CPU (\`nproc\`), ${m.cpuModel}, ${num(m.memTotalMiB)} MiB; Node ${m.node}; Linux ${m.kernel}; CLK_TCK ${m.clkTck}`,
    `- open files: soft ${r.fdLimit.soft}, hard ${r.fdLimit.hard}; servers and load generator ran with ${r.fdLimit.children}`,
    `- ${r.placement}`,
    ...(r.loadgenReader ? [`- ${r.loadgenReader}`] : []),
    `- fan-out N: ${r.config.ns.join(', ')}; burst ${r.config.burst} changes; paced ${r.config.paced.changes} changes${pacedFewer(r.config.paced)} ${r.config.paced.intervalMs} ms apart; ${r.config.concurrency} handshakes in flight; payload ${r.config.payloadBytes} B`,
    `- duration: ${num(r.durationS)} s`,
    '',
    "How to read the figures: see `bench/README.md`. Latency is commit (publisher clock just before it sends the change) to receive, on one monotonic clock: for the clients the load generator reads natively, the kernel's receive timestamp of the frame (BENCH_LOADGEN_TIMES=kernel, the default), else the time it read the frame (Socket.IO's clients always). CPU µs/deliv is server utime+stime over the window ÷ deliveries.",
    '',
    '## Fan-out',
    '',
    markdownTable(fanoutTable(r)),
    '',
  );
  if (svgFile) out.push(`![commit-to-receive latency by percentile](${svgFile})`, '');
  const slow = slowChangesTable(r);
  if (slow.rows.length > 0) {
    out.push(
      '### Slowest paced changes',
      '',
      "Each change's last delivery, how long the server and the load generator waited for a CPU (schedstat run_delay, all threads; then the busiest thread of each alone, server / load generator), and the hypervisor's steal time (/proc/stat, all CPUs, 10 ms ticks), from its publish to the next change's.",
      '',
      markdownTable(slow),
      '',
    );
  }
  const delay = readDelayTable(r);
  if (delay.rows.length > 0) {
    out.push(
      "### The load generator's read delay",
      '',
      "How long after the kernel received them the load generator read its clients' frames (it shares the machine's CPUs with the server and the publisher): time the latencies above leave out, for the clients with kernel receive times.",
      '',
      markdownTable(delay),
      '',
    );
  }
  out.push('## Connect and memory', '', markdownTable(connectTable(r)), '');
  out.push('## Ratios', '');
  out.push(r.ratios.length > 0 ? markdownTable(ratioTable(r)) : `No ratio: ${noRatio}.`, '');
  out.push('## Targets', '');
  for (const t of r.targets) {
    const [first, ...rest] = (t.reason ?? '').split('\n');
    const state = t.status === 'ok' ? 'ran' : `**${t.status}**: ${first}`;
    out.push(`- **${t.label}** (\`${t.name}\`): ${state}`);
    if (rest.length > 0) out.push('', '  ```text', ...rest.map((l) => `  ${l}`), '  ```', '');
    for (const n of t.notes) out.push(`  - ${n}`);
    for (const run of t.runs) {
      for (const e of run.connect?.errors ?? []) out.push(`  - N=${run.n} connect errors: ${e}`);
      for (const s of run.scenarios) {
        if (s.duplicates > 0)
          out.push(`  - N=${run.n} ${s.scenario}: ${s.duplicates} duplicate deliveries`);
        if (s.dropped > 0) out.push(`  - N=${run.n} ${s.scenario}: ${s.dropped} clients dropped`);
        for (const e of s.publishErrors)
          out.push(`  - N=${run.n} ${s.scenario} publish error: ${e}`);
      }
      if (run.warmupCurveUs?.length) {
        const block = Math.round(r.config.warmPublishes / run.warmupCurveUs.length);
        out.push(
          `  - N=${run.n} warm-up, server CPU µs per publish by blocks of ${block}: ${run.warmupCurveUs.map((us) => num(us)).join(', ')}`,
        );
      }
      if (run.error) out.push(`  - N=${run.n}: \`${run.error.split('\n')[0]}\``);
    }
  }
  out.push(
    '',
    '## Routing',
    '',
    childSection(r.routing),
    '## Write path',
    '',
    childSection(r.writePath),
  );
  if (r.warnings.length > 0) out.push('## Warnings', '', ...r.warnings.map((w) => `- ${w}`), '');
  return out.join('\n');
}

/**
 * A ratio with two decimals, or as many more as it takes to show which side of `target`
 * it falls (0.697 against 0.7 is not "0.70").
 */
export function ratioAgainst(x: number, target: number): string {
  for (let digits = 2; digits < 8; digits++) {
    const text = x.toFixed(digits);
    if (x < target === Number(text) < target) return text;
  }
  return String(x);
}
