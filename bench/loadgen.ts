/**
 * Load generator: a separate process, driven by run.ts over IPC (see LoadgenCommand).
 *
 * - `connect`: opens N clients with at most `concurrency` handshakes in flight, each one
 *   connected, authenticated and subscribed before it counts, and reports the rate.
 * - `arm`: starts a measurement for the changes seqBase … seqBase+count-1.
 * - `collect`: waits until every subscribed client got every armed change (or the time
 *   bound passes) and reports deliveries and commit-to-receive latency.
 *
 * Frames are read cheaply: once a `ws` client is subscribed, its socket is read in C with
 * every other subscribed socket (lib/native-reader.ts, native/frame-reader), or, without the
 * addon or with BENCH_LOADGEN_READER=js, its bytes go to a FrameReader of its own
 * (lib/frame-reader.ts); BENCH_LOADGEN_READER=ws keeps ws's Receiver. The marker
 * `bt=<µs>|bs=<seq>|` is found in the raw payload; no JSON.parse per delivered frame
 * (socket.io-client parses its packets itself). A frame may carry several changes
 * (batching): every marker in it counts.
 */
import { sign } from 'jsonwebtoken';
import { io as ioClient, type Socket } from 'socket.io-client';
import WebSocket from 'ws';
import {
  marker,
  MARKER_SEQ,
  MARKER_TS,
  nowUs,
  summarize,
  type ClientSpec,
  type LoadgenCommand,
  type LoadgenMessage,
  type ReadDelay,
} from './lib/common';
import {
  FrameReader,
  loadgenReader,
  loadgenTimes,
  readDirectly,
  sharedBufferConnect,
} from './lib/frame-reader';
import { NativeReader } from './lib/native-reader';

/** Spreads client source addresses over 127.0.0.1 … 127.0.0.<n> (per-IP limits, port space). */
const SOURCE_IPS = Math.max(1, Math.min(250, Number(process.env.BENCH_SOURCE_IPS ?? '1') || 1));
const HANDSHAKE_TIMEOUT_MS = 30_000;
/** The load generator never outlives this, whatever happens to run.ts. */
const MAX_LIFETIME_MS = 20 * 60_000;

interface Measurement {
  seqBase: number;
  count: number;
  clients: number;
  expected: number;
  /** seen[client * count + (seq - seqBase)] */
  seen: Uint8Array;
  samples: Float64Array;
  /** the slowest and the fastest delivery of each change, µs (by seq - seqBase) */
  worst: Float64Array;
  best: Float64Array;
  deliveries: number;
  duplicates: number;
  frames: number;
  bytes: number;
  firstSentUs: number;
  lastRecvUs: number;
  cpu: NodeJS.CpuUsage;
  wallUs: number;
  /** set by collect (declared here, so that every measurement has one shape: see warmReaders) */
  onComplete: (() => void) | undefined;
}

const closers: (() => void)[] = [];
let capacity = 0;
let subscribed = 0;
let dropped = 0;
let current: Measurement | null = null;

function send(msg: LoadgenMessage): void {
  process.send?.(msg);
}

function record(client: number, sentUs: number, seq: number, recvUs: number): void {
  const m = current as Measurement;
  const idx = seq - m.seqBase;
  if (idx < 0 || idx >= m.count) return; // a warm-up or late change of an earlier phase
  const k = client * m.count + idx;
  if (m.seen[k] === 1) {
    m.duplicates++;
    return;
  }
  m.seen[k] = 1;
  const latency = recvUs - sentUs;
  m.samples[m.deliveries++] = latency;
  if (latency > m.worst[idx]) m.worst[idx] = latency;
  if (m.best[idx] === 0 || latency < m.best[idx]) m.best[idx] = latency;
  if (sentUs < m.firstSentUs) m.firstSentUs = sentUs;
  m.lastRecvUs = recvUs;
  if (m.deliveries === m.expected) m.onComplete?.();
}

const TS_LEN = MARKER_TS.length;
const SEQ_LEN = MARKER_SEQ.length;
const SEQ_BYTES = Buffer.from(MARKER_SEQ, 'latin1');

function startsWithAt(frame: Buffer, prefix: Buffer, at: number): boolean {
  for (let j = 0; j < prefix.length; j++) if (frame[at + j] !== prefix[j]) return false;
  return true;
}

function onBuffer(client: number, frame: Buffer): void {
  if (current === null) return;
  const recv = nowUs();
  current.frames++;
  current.bytes += frame.length;
  let pos = frame.indexOf(MARKER_TS);
  while (pos !== -1) {
    let i = pos + TS_LEN;
    let ts = 0;
    for (let c = frame[i]; c >= 48 && c <= 57; c = frame[++i]) ts = ts * 10 + (c - 48);
    let seq = -1;
    if (startsWithAt(frame, SEQ_BYTES, i)) {
      i += SEQ_LEN;
      seq = 0;
      for (let c = frame[i]; c >= 48 && c <= 57; c = frame[++i]) seq = seq * 10 + (c - 48);
    }
    if (seq >= 0) record(client, ts, seq, recv);
    pos = frame.indexOf(MARKER_TS, i);
  }
}

function onString(client: number, frame: string): void {
  if (current === null) return;
  const recv = nowUs();
  current.frames++;
  current.bytes += frame.length;
  let pos = frame.indexOf(MARKER_TS);
  while (pos !== -1) {
    let i = pos + TS_LEN;
    let ts = 0;
    for (let c = frame.charCodeAt(i); c >= 48 && c <= 57; c = frame.charCodeAt(++i)) {
      ts = ts * 10 + (c - 48);
    }
    let seq = -1;
    if (frame.startsWith(MARKER_SEQ, i)) {
      i += SEQ_LEN;
      seq = 0;
      for (let c = frame.charCodeAt(i); c >= 48 && c <= 57; c = frame.charCodeAt(++i)) {
        seq = seq * 10 + (c - 48);
      }
    }
    if (seq >= 0) record(client, ts, seq, recv);
    pos = frame.indexOf(MARKER_TS, i);
  }
}

const READER = loadgenReader();
const DIRECT = READER !== 'ws';
const KERNEL_TIMES = loadgenTimes() === 'kernel';

/** The native reader's records and counts go where onBuffer puts a frame's. */
const native =
  READER === 'native'
    ? NativeReader.open(
        {
          record: (client, sentUs, seq, recvUs) => {
            if (current !== null) record(client, sentUs, seq, recvUs);
          },
          counts: (frames, bytes) => {
            if (current === null) return;
            current.frames += frames;
            current.bytes += bytes;
          },
        },
        KERNEL_TIMES,
      )
    : { reader: null, why: '' };

/** What reads subscribed `ws` clients' frames, for the report. */
const readerDescription = native.reader
  ? `in C, every subscribed socket in one epoll set (native/frame-reader), ${KERNEL_TIMES ? "received at the kernel's receive timestamp of the frame (SO_TIMESTAMPNS)" : 'received when read (BENCH_LOADGEN_TIMES=read)'}`
  : READER === 'ws'
    ? "through ws's Receiver (BENCH_LOADGEN_READER=ws)"
    : READER === 'native'
      ? `by a JavaScript FrameReader per socket: the native reader is not available (${native.why})`
      : 'by a JavaScript FrameReader per socket (BENCH_LOADGEN_READER=js)';

/** Subscribed clients left with ws's Receiver, and read by a FrameReader, not natively. */
let declined = 0;
let declinedNative = 0;

/** From now on (the client is subscribed) its frames are read natively or by a FrameReader. */
function readFrames(ws: WebSocket, client: number): void {
  if (native.reader?.attach(ws, client)) return;
  if (DIRECT && !readDirectly(ws, (payload) => onBuffer(client, payload))) declined++;
  else if (native.reader !== null) declinedNative++;
}

function sourceAddress(i: number): string | undefined {
  return SOURCE_IPS > 1 ? `127.0.0.${1 + (i % SOURCE_IPS)}` : undefined;
}

/** Resolves once the client is subscribed; rejects with the reason it is not. */
function connectOne(i: number, spec: ClientSpec, token: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    let ready = false;
    let close: () => void = () => undefined;
    const timer = setTimeout(() => {
      close();
      reject(new Error('handshake timeout'));
    }, HANDSHAKE_TIMEOUT_MS);
    const succeed = (): void => {
      ready = true;
      clearTimeout(timer);
      closers.push(close);
      subscribed++;
      resolve();
    };
    const fail = (err: Error): void => {
      clearTimeout(timer);
      close();
      reject(err);
    };
    const lost = (): void => {
      if (ready) dropped++;
    };

    if (spec.kind === 'socketio') {
      const socket: Socket = ioClient(spec.url, {
        transports: ['websocket'],
        forceNew: true,
        reconnection: false,
        timeout: HANDSHAKE_TIMEOUT_MS,
        auth: token ? { token } : {},
        ...({ localAddress: sourceAddress(i) } as object),
      });
      close = () => socket.disconnect();
      socket.on('connect', () => {
        socket.emit('subscribe', spec.subscribe, () => succeed());
      });
      socket.on('connect_error', (err) => fail(err));
      socket.on('disconnect', lost);
      socket.on('data_change', (frame: string) => onString(i, frame));
      return;
    }

    const url = token ? `${spec.url}?access_token=${encodeURIComponent(token)}` : spec.url;
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      localAddress: sourceAddress(i),
      // the FrameReader then parses each read where it landed (see sharedBufferConnect)
      ...(DIRECT ? { createConnection: sharedBufferConnect } : {}),
    });
    close = () => {
      native.reader?.detach(ws);
      ws.terminate();
    };
    ws.on('error', (err) => {
      if (!ready) fail(err);
    });
    ws.on('close', (code, reason) => {
      if (ready) lost();
      else fail(new Error(`closed ${code} ${reason.toString()}`.trim()));
    });
    if (spec.kind === 'raw') {
      ws.on('open', () => {
        succeed();
        readFrames(ws, i);
      });
      ws.on('message', (data: Buffer) => onBuffer(i, data));
      return;
    }
    ws.on('message', (data: Buffer) => {
      if (ready) {
        onBuffer(i, data);
        return;
      }
      let msg: { type?: string; data?: { code?: string; message?: string } };
      try {
        msg = JSON.parse(data.toString('utf8')) as typeof msg;
      } catch {
        fail(new Error('handshake frame is not JSON'));
        return;
      }
      if (msg.type === 'connection_established') ws.send(JSON.stringify(spec.subscribe));
      else if (msg.type === 'subscription_created') {
        succeed();
        readFrames(ws, i);
      } else if (msg.type === 'error') fail(new Error(`${msg.data?.code}: ${msg.data?.message}`));
    });
  });
}

async function connectAll(
  spec: ClientSpec,
  n: number,
  concurrency: number,
  timeoutMs: number,
): Promise<void> {
  const tokens: (string | undefined)[] = [];
  const exp = Math.floor(Date.now() / 1000) + 4 * 3600;
  for (let i = 0; i < n; i++) {
    tokens.push(
      spec.jwt
        ? sign({ ...spec.jwt.claims, sub: `bench-user-${i}`, exp }, spec.jwt.secret, {
            algorithm: 'HS256',
          })
        : undefined,
    );
  }
  capacity = n;
  const errors = new Map<string, number>();
  let started = 0;
  let failed = 0;
  let inFlight = 0;
  const t0 = Date.now();
  const deadline = t0 + timeoutMs;
  const progress = setInterval(
    () => send({ type: 'progress', phase: 'connect', done: subscribed + failed, total: n }),
    500,
  );
  await new Promise<void>((done) => {
    const launch = (): void => {
      while (inFlight < concurrency && started < n && Date.now() < deadline) {
        const i = started++;
        inFlight++;
        connectOne(i, spec, tokens[i])
          .catch((err: Error) => {
            failed++;
            const key = err.message.slice(0, 120);
            errors.set(key, (errors.get(key) ?? 0) + 1);
          })
          .finally(() => {
            inFlight--;
            if (inFlight === 0 && (started >= n || Date.now() >= deadline)) done();
            else launch();
          });
      }
    };
    launch();
  });
  clearInterval(progress);
  if (declinedNative > 0) {
    errors.set(
      'subscribed, but its frames read by the JavaScript FrameReader, not natively',
      declinedNative,
    );
  }
  if (declined > 0) {
    errors.set(
      "subscribed, but its frames read through ws's Receiver, not the FrameReader",
      declined,
    );
  }
  const elapsedMs = Date.now() - t0;
  send({
    type: 'connected',
    requested: n,
    connected: subscribed,
    failed: failed + (n - started),
    elapsedMs,
    perSec: (subscribed * 1000) / Math.max(1, elapsedMs),
    errors: [...errors].map(([msg, count]) => `${count}× ${msg}`),
  });
}

/** A measurement of the changes seqBase … seqBase+count-1 to `clients` of `slots` clients. */
function measurement(seqBase: number, count: number, clients: number, slots: number): Measurement {
  return {
    seqBase,
    count,
    clients,
    expected: clients * count,
    seen: new Uint8Array(slots * count),
    samples: new Float64Array(slots * count),
    worst: new Float64Array(count),
    best: new Float64Array(count),
    deliveries: 0,
    duplicates: 0,
    frames: 0,
    bytes: 0,
    firstSentUs: Infinity,
    lastRecvUs: 0,
    cpu: process.cpuUsage(),
    wallUs: nowUs(),
    onComplete: undefined,
  };
}

/** The native reader's read delay since arm, when it timed reads by the kernel's clock. */
function readDelay(): { readDelay?: ReadDelay } {
  if (!native.reader || !KERNEL_TIMES) return {};
  const delay = native.reader.readDelay();
  return delay.reads + delay.unstamped > 0 ? { readDelay: delay } : {};
}

function arm(seqBase: number, count: number): void {
  current = measurement(seqBase, count, subscribed, capacity);
  native.reader?.readDelay(); // (from now on)
  send({ type: 'armed' });
}

/**
 * Runs the frame readers (FrameReader, onBuffer, onString, record) over synthetic frames of
 * every shape they meet, until V8 has optimized them, and forgets what they recorded: frames of one
 * change and of several, a change delivered twice, one outside the measurement, a frame
 * without a marker, and the last expected delivery. Otherwise V8 compiles them for the
 * frames of the first target read, and a target whose burst frames carry several changes
 * each (batching) threw them out of optimized code: the load generator then read that
 * target's first paced change with unoptimized code while TurboFan recompiled `onBuffer`
 * (10–20 ms of compiling) on its own core, 6–10 ms later to the last delivery than the
 * other changes (docs/performance-history.md, "Where we stand"). The same for every
 * target.
 */
function warmReaders(): void {
  const clients = 50;
  const count = 20;
  const ts = nowUs();
  const frameOf = (seqs: number[]): string =>
    `{"type":"data_change","data":{"changes":[${seqs.map((seq) => `{"title":"${marker(seq, ts)}"}`).join(',')}]}}`;
  const single = Array.from({ length: 12 }, (_, seq) => frameOf([seq]));
  const several = frameOf([12, 13, 14, 15]);
  const rest = frameOf([16, 17, 18, 19]);
  const again = frameOf([0, 1]); // delivered already: duplicates
  const outside = frameOf([count + 3]);
  const unmarked = '{"type":"pong","data":{}}';
  // the frames of one change and of several as a server sends them (unmasked text frames,
  // a 7-bit and a 16-bit length), and a ping, for the FrameReader: in one chunk, or cut at
  // every 37th byte (frames across chunks)
  const wire = Buffer.concat([
    ...single.map((frame) => wsFrame(1, Buffer.from(frame))),
    wsFrame(1, Buffer.from(several)),
    wsFrame(9, Buffer.alloc(0)),
  ]);
  const noop = (): void => undefined;
  for (let round = 0; round < 40; round++) {
    const m = (current = measurement(0, count, clients, clients));
    m.onComplete = () => undefined;
    for (let client = 0; client < clients; client++) {
      const reader = new FrameReader((payload) => onBuffer(client, payload), noop, noop);
      if (round % 2 === 0) reader.push(wire);
      else for (let at = 0; at < wire.length; at += 37) reader.push(wire.subarray(at, at + 37));
      onString(client, rest);
      onBuffer(client, Buffer.from(again));
      onString(client, again);
      onBuffer(client, Buffer.from(outside));
      onBuffer(client, Buffer.from(unmarked));
      onString(client, unmarked);
    }
    if (m.deliveries !== m.expected) throw new Error('the frame readers miscounted their warm-up');
  }
  current = null;
}

/** An unmasked frame (FIN set, under 64 KiB) as a server writes it: warmReaders' input. */
function wsFrame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const head =
    len < 126
      ? Buffer.from([0x80 | opcode, len])
      : Buffer.from([0x80 | opcode, 126, len >> 8, len & 0xff]);
  return Buffer.concat([head, payload]);
}

async function collect(timeoutMs: number): Promise<void> {
  const m = current;
  if (!m) throw new Error('collect before arm');
  const progress = setInterval(
    () => send({ type: 'progress', phase: 'deliver', done: m.deliveries, total: m.expected }),
    500,
  );
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    m.onComplete = () => {
      clearTimeout(timer);
      resolve();
    };
    if (m.deliveries >= m.expected) m.onComplete();
  });
  clearInterval(progress);
  current = null;
  const cpu = process.cpuUsage(m.cpu);
  send({
    type: 'collected',
    clients: m.clients,
    expected: m.expected,
    deliveries: m.deliveries,
    duplicates: m.duplicates,
    frames: m.frames,
    bytes: m.bytes,
    dropped,
    firstSentUs: m.firstSentUs,
    lastRecvUs: m.lastRecvUs,
    latency: summarize(m.samples.subarray(0, m.deliveries)),
    // a change that reached nobody: null, not 0 ms
    worstPerChangeMs: Array.from(m.worst, (us) => (us > 0 ? Math.round(us / 10) / 100 : null)),
    bestPerChangeMs: Array.from(m.best, (us) => (us > 0 ? Math.round(us / 10) / 100 : null)),
    loadgenCpuMs: (cpu.user + cpu.system) / 1000,
    loadgenWallMs: (nowUs() - m.wallUs) / 1000,
    ...readDelay(),
  });
}

process.on('message', (raw) => {
  const cmd = raw as LoadgenCommand;
  const fail = (err: unknown): void => send({ type: 'error', message: String(err) });
  try {
    switch (cmd.cmd) {
      case 'connect':
        connectAll(cmd.spec, cmd.n, cmd.concurrency, cmd.timeoutMs).catch(fail);
        break;
      case 'arm':
        arm(cmd.seqBase, cmd.count);
        break;
      case 'collect':
        collect(cmd.timeoutMs).catch(fail);
        break;
      case 'close':
        for (const close of closers) close();
        setTimeout(() => process.exit(0), 100);
        break;
      default: {
        const _exhaustive: never = cmd;
        fail(`unknown command ${JSON.stringify(_exhaustive)}`);
      }
    }
  } catch (err) {
    fail(err);
  }
});
process.on('disconnect', () => process.exit(0));
setTimeout(() => process.exit(3), MAX_LIFETIME_MS).unref();
warmReaders();
send({ type: 'ready', reader: readerDescription });
