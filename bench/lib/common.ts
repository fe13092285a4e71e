/**
 * Pieces shared by the orchestrator (run.ts), the load generator and the bench targets:
 * the clock, the marker that carries a publish timestamp inside a payload, the IPC messages
 * between run.ts and loadgen.ts, and latency statistics.
 *
 * Clock: `process.hrtime` reads CLOCK_MONOTONIC, which is one clock for every process on
 * the machine, so a timestamp taken by the publisher (run.ts) and a receive time taken by
 * the load generator (another process) can be subtracted directly, at microsecond
 * resolution.
 */

/** Monotonic machine clock in microseconds, comparable across processes on one host. */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The marker put in the payload of every published change: `bt=<µs>|bs=<seq>|`.
 * `bt` is the publisher's clock just before it sends the change, `bs` the change's
 * sequence number within the run. The load generator finds it with indexOf on the raw
 * frame, so it never parses JSON on the hot path.
 */
export const MARKER_TS = 'bt=';
export const MARKER_SEQ = '|bs=';

export function marker(seq: number, ts: number = nowUs()): string {
  return `${MARKER_TS}${ts}${MARKER_SEQ}${seq}|`;
}

/**
 * A change message with the shape and size of the `data_change` frame that the sample app
 * sends for one task update (~740 bytes, copied from a real frame), with the marker in the
 * title. The bare-ws, Socket.IO and Nchan targets broadcast this text as is, so that every
 * target moves the same bytes per delivery.
 */
export function changePayload(seq: number, ts: number = nowUs()): string {
  const id = 'ec2e79be-3022-4532-b96f-353d2bf64f4a';
  const iso = '2025-01-01T00:00:00.000Z';
  return JSON.stringify({
    type: 'data_change',
    data: {
      subscriptionId: '9f92075b-787f-4e6a-81dd-4c4f9655cada',
      changes: [
        {
          seq: String(1000 + seq),
          operation: 'update',
          event: 'modified',
          database: 'default',
          collection: 'tasks',
          documentId: id,
          document: {
            id,
            projectId: 'd444ec0d-7e35-44be-be57-8d456bdc2eed',
            title: `bench ${marker(seq, ts)}`,
            status: 'todo',
            priority: 3,
            assigneeId: 'bench-user-0',
            ownerId: 'bench-admin',
            department: 'eng',
            budget: 1000,
            tags: ['bench'],
            dueAt: iso,
            createdAt: iso,
            updatedAt: iso,
            version: 2,
          },
          changedFields: ['title'],
          metadata: { timestamp: iso, actorId: 'bench-admin', version: 2 },
        },
      ],
    },
  });
}

/** Which handshake the load generator performs. */
export type ClientKind =
  /** PROTOCOL.md: wait for connection_established, send subscribe, wait for subscription_created. */
  | 'protocol'
  /** socket.io-client (websocket transport only): connect with auth.token, emit('subscribe') with ack. */
  | 'socketio'
  /** Plain WebSocket; subscribed as soon as it is open (Nchan: the URL names the channel). */
  | 'raw';

export interface ClientSpec {
  kind: ClientKind;
  /** ws:// URL (protocol, raw) or http:// base URL (socketio). */
  url: string;
  /** When set, each client i gets its own HS256 token (sub `bench-user-<i>`, this payload). */
  jwt?: { secret: string; claims: Record<string, unknown> };
  /** The subscribe message (protocol kind). */
  subscribe?: unknown;
}

// ---------------------------------------------------------------------------------------
// IPC between run.ts and loadgen.ts

export type LoadgenCommand =
  | { cmd: 'connect'; spec: ClientSpec; n: number; concurrency: number; timeoutMs: number }
  | { cmd: 'arm'; seqBase: number; count: number }
  | { cmd: 'collect'; timeoutMs: number }
  | { cmd: 'close' };

export interface ConnectResult {
  type: 'connected';
  requested: number;
  connected: number;
  failed: number;
  elapsedMs: number;
  perSec: number;
  errors: string[];
}

/**
 * How long after the kernel received them the load generator read its clients' frames
 * (NativeReader.readDelay, with kernel receive times): reads that had a kernel timestamp
 * (one per read, its last segment's), their mean and longest delay, and the reads without a
 * usable timestamp (timed at the read).
 */
export interface ReadDelay {
  reads: number;
  meanUs: number;
  maxUs: number;
  unstamped: number;
}

export interface CollectResult {
  type: 'collected';
  clients: number;
  expected: number;
  deliveries: number;
  duplicates: number;
  frames: number;
  bytes: number;
  /** Clients that closed after being subscribed (at any time so far). */
  dropped: number;
  /** First publish timestamp seen in a marker, and the last receive time (µs, nowUs clock). */
  firstSentUs: number;
  lastRecvUs: number;
  latency: LatencySummary;
  /** The slowest delivery of each change, in publish order, ms (null: it reached nobody). */
  worstPerChangeMs: (number | null)[];
  /** The fastest delivery of each change, ms: publish to the first subscriber reached. */
  bestPerChangeMs: (number | null)[];
  /** Load generator CPU time (user+system) between arm and the end of collect, ms. */
  loadgenCpuMs: number;
  loadgenWallMs: number;
  /**
   * With kernel receive times (BENCH_LOADGEN_TIMES=kernel, the native reader): the read
   * delay between arm and the end of collect, left out of every latency above; absent with
   * read times and when nothing was read natively (Socket.IO).
   */
  readDelay?: ReadDelay;
}

export type LoadgenMessage =
  | { type: 'ready'; reader: string }
  | { type: 'progress'; phase: string; done: number; total: number }
  | ConnectResult
  | { type: 'armed' }
  | CollectResult
  | { type: 'error'; message: string };

// ---------------------------------------------------------------------------------------
// Latency statistics

/** Log-spaced histogram: BUCKETS_PER_DECADE buckets per decade from 10 µs to 100 s. */
export const HIST_MIN_US = 10;
export const BUCKETS_PER_DECADE = 20;
export const HIST_BUCKETS = 7 * BUCKETS_PER_DECADE;

/** Upper edge (µs) of histogram bucket i. Bucket 0 also takes everything below 10 µs. */
export function bucketUpperUs(i: number): number {
  return HIST_MIN_US * Math.pow(10, (i + 1) / BUCKETS_PER_DECADE);
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
  /** Counts per log bucket (see bucketUpperUs); the last bucket takes everything above. */
  histogram: number[];
}

export function summarize(samplesUs: Float64Array): LatencySummary {
  const sorted = Float64Array.from(samplesUs).sort();
  const count = sorted.length;
  const histogram = new Array<number>(HIST_BUCKETS).fill(0);
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const v = sorted[i];
    sum += v;
    const b = v <= HIST_MIN_US ? 0 : Math.floor(Math.log10(v / HIST_MIN_US) * BUCKETS_PER_DECADE);
    histogram[Math.min(HIST_BUCKETS - 1, Math.max(0, b))]++;
  }
  const pct = (p: number): number =>
    count === 0 ? NaN : sorted[Math.min(count - 1, Math.ceil((p / 100) * count) - 1)] / 1000;
  return {
    count,
    p50Ms: pct(50),
    p90Ms: pct(90),
    p99Ms: pct(99),
    maxMs: count === 0 ? NaN : sorted[count - 1] / 1000,
    meanMs: count === 0 ? NaN : sum / count / 1000,
    histogram,
  };
}
