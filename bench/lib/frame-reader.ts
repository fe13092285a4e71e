import { connect, type createConnection, type NetConnectOpts, type Socket } from 'node:net';
import type WebSocket from 'ws';

/**
 * How the load generator reads subscribed clients' frames (`BENCH_LOADGEN_READER`; the load
 * generator inherits run.ts's environment): `native` (the default) in C, by NativeReader,
 * where the addon is built, else as `js`; `js` by a FrameReader per socket; `ws` through
 * ws's Receiver. Anything else is refused.
 */
export type LoadgenReader = 'native' | 'js' | 'ws';

export function loadgenReader(): LoadgenReader {
  return setting('BENCH_LOADGEN_READER', ['native', 'js', 'ws']);
}

/**
 * Which time a delivery was received at (`BENCH_LOADGEN_TIMES`): `kernel` (the default) the
 * kernel's receive timestamp of the frame, for the clients the native reader reads; `read`
 * the time the load generator read it, as every other reader does. Anything else is refused.
 */
export type LoadgenTimes = 'kernel' | 'read';

export function loadgenTimes(): LoadgenTimes {
  return setting('BENCH_LOADGEN_TIMES', ['kernel', 'read']);
}

/** The environment variable's value, one of `values` (unset: the first); else it throws. */
function setting<T extends string>(name: string, values: readonly [T, ...T[]]): T {
  const value = process.env[name] ?? values[0];
  if ((values as readonly string[]).includes(value)) return value as T;
  const list = `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}`;
  throw new Error(`${name} must be ${list}, not ${JSON.stringify(value)}`);
}

/** ws's default `maxPayload` (100 MiB): a longer frame goes back to ws, which fails it. */
const MAX_PAYLOAD = 100 * 1024 * 1024;

/**
 * A `ws` client's incoming WebSocket frames, parsed off its socket's bytes (RFC 6455, 5.2),
 * for the load generator: data frames go to `onFrame` (fragments joined first), pings are
 * answered with `pong`, pongs are dropped, and a close frame, or one that breaks the
 * protocol (masked, RSV bits, unknown opcode, out-of-place fragment, over 100 MiB), goes
 * back with every byte after it to `handBack` (readDirectly: to ws, which answers or
 * fails it as it always did). A payload handed to `onFrame` may be a view of the chunk it
 * came in, and that chunk may be the buffer the next read lands in (sharedBufferConnect):
 * read it before returning. What the reader keeps between chunks, or hands back, it copies.
 *
 * Why: through ws's Receiver each frame costs a Writable stream write, its parse loop and a
 * 'message' event. Profiled at N = 1 000 paced (session of 2026-12-06, eighth), the load
 * generator spent about half of its ~12 µs per delivery in user space, about the server
 * under test's own cost per delivery, so the last deliveries of a change waited for the
 * load generator as much as for the server. The same reader serves every `ws` target.
 */
export class FrameReader {
  private pending: Buffer | null = null;
  private fragments: Buffer[] | null = null;
  private done = false;

  constructor(
    private readonly onFrame: (payload: Buffer) => void,
    private readonly pong: (payload: Buffer) => void,
    private readonly handBack: (rest: Buffer) => void,
  ) {}

  push(chunk: Buffer): void {
    if (this.done) return;
    let buf = chunk;
    if (this.pending !== null) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    const end = buf.length;
    let at = 0;
    while (end - at >= 2) {
      const b0 = buf[at];
      const b1 = buf[at + 1];
      const opcode = b0 & 0x0f;
      const data = opcode === 1 || opcode === 2;
      let len = b1 & 0x7f;
      let head = 2;
      if (len === 126) {
        if (end - at < 4) break;
        len = buf.readUInt16BE(at + 2);
        head = 4;
      } else if (len === 127) {
        if (end - at < 10) break;
        len = buf.readUInt32BE(at + 2) * 0x1_0000_0000 + buf.readUInt32BE(at + 6);
        head = 10;
      }
      // ws's to answer: a close; and to fail (1002, 1009), as it would have: a masked
      // frame, RSV bits (no extension is on), an unknown opcode, a continuation with
      // nothing to continue, a data frame inside a fragmented message, over ws's maxPayload
      if (
        opcode === 8 ||
        (b1 & 0x80) !== 0 ||
        (b0 & 0x70) !== 0 ||
        !(data || opcode === 0 || opcode === 9 || opcode === 10) ||
        (opcode === 0 && this.fragments === null) ||
        (data && this.fragments !== null) ||
        len > MAX_PAYLOAD
      ) {
        this.done = true;
        this.handBack(Buffer.from(buf.subarray(at)));
        return;
      }
      if (end - at < head + len) break;
      const payload = buf.subarray(at + head, at + head + len);
      at += head + len;
      const fin = (b0 & 0x80) !== 0;
      if (data) {
        if (fin) this.onFrame(payload);
        else this.fragments = [Buffer.from(payload)];
      } else if (opcode === 0 && this.fragments !== null) {
        this.fragments.push(Buffer.from(payload));
        if (fin) {
          const whole = Buffer.concat(this.fragments);
          this.fragments = null;
          this.onFrame(whole);
        }
      } else if (opcode === 9) {
        this.pong(payload);
      }
    }
    if (at < end) this.pending = Buffer.from(buf.subarray(at));
  }
}

/** The buffer every sharedBufferConnect socket reads into (see there). */
const SHARED = Buffer.allocUnsafe(64 * 1024);

/** A sharedBufferConnect socket's FrameReader, once readDirectly gave it one. */
const direct = new WeakMap<Socket, { reader: FrameReader | null }>();

/**
 * ws's `createConnection` for the load generator's clients: a TCP socket whose reads land
 * in one buffer shared by every such socket (net's `onread`), not in a new Buffer per read
 * pushed through the socket's Readable stream. Until readDirectly gives the socket a
 * FrameReader (and again after the reader hands a close back), each read is copied and
 * pushed into the stream as usual, for the HTTP upgrade and ws's Receiver; from then on
 * the reader parses it in place. One buffer serves all: a read is consumed before the
 * event loop makes the next, and the reader copies what it keeps.
 *
 * Why: a `perf` of the load generator in ours' paced series (N = 1 000, session of
 * 2026-12-06, ninth) showed the read path itself (Node allocating a 64 KiB buffer per
 * read, `onStreamRead`, the Readable stream's push and its 'data' event) as a large part
 * of its user-space time, and the load generator's CPU per delivery, not the server's,
 * bounds how soon the last subscriber of a change has it.
 */
// (http.request calls it with the options and a callback; a socket returned is used as is)
export const sharedBufferConnect = connectShared as typeof createConnection;

function connectShared(options: NetConnectOpts): Socket {
  const state: { reader: FrameReader | null } = { reader: null };
  const socket = connect({
    ...options,
    onread: {
      buffer: SHARED,
      callback: (nread: number, buf: Uint8Array): boolean => {
        const chunk = Buffer.from(buf.buffer, buf.byteOffset, nread);
        if (state.reader === null) return socket.push(Buffer.from(chunk)); // false: stop reading
        state.reader.push(chunk);
        return true;
      },
    },
  } as NetConnectOpts);
  direct.set(socket, state);
  return socket;
}

/**
 * The bytes a socket's stream holds (ws puts back what came with the upgrade response), or
 * null, taken out without emitting them as 'data' (read() would, to ws).
 */
export function takeQueued(socket: Socket): Buffer | null {
  if (socket.readableLength === 0) return null;
  const listeners = socket.listeners('data') as ((chunk: Buffer) => void)[];
  socket.removeAllListeners('data');
  const queued = socket.read() as Buffer | null;
  for (const listener of listeners) socket.on('data', listener);
  return queued;
}

/**
 * From now on the client's socket bytes go to a FrameReader instead of ws's Receiver, until
 * a close frame hands them back. Call it once the Receiver has parsed everything before
 * (the load generator: when the client is subscribed). Returns false, and leaves the
 * client with ws's Receiver, when the Receiver holds part of a next frame, the client
 * has no socket, or ws's fields are not where this expects them (`_socket` and
 * `_receiver` are ws's own; package-lock.json pins ws). A socket from sharedBufferConnect
 * is read in place, the bytes its stream already holds first; any other has its 'data'
 * listeners swapped for the reader's, which also takes what its stream holds, in order.
 */
export function readDirectly(ws: WebSocket, onFrame: (payload: Buffer) => void): boolean {
  const own = ws as unknown as {
    _socket?: Socket | null;
    _receiver?: { _bufferedBytes?: number };
  };
  const socket = own._socket;
  // (a ws release that renamed these leaves every client with its Receiver: no crash)
  if (!socket || typeof own._receiver?._bufferedBytes !== 'number') return false;
  if (own._receiver._bufferedBytes > 0) return false;
  // (ws may queue a pong behind a frame it is still sending: give it its own bytes)
  const pong = (payload: Buffer): void => ws.pong(Buffer.from(payload));
  const shared = direct.get(socket);
  if (shared) {
    const reader = new FrameReader(onFrame, pong, (rest) => {
      shared.reader = null;
      socket.push(rest);
    });
    // bytes already in the socket's stream (ws puts back what came with the upgrade
    // response) come before any later read: the reader takes them first, ws not at all
    const queued = takeQueued(socket);
    shared.reader = reader;
    if (queued !== null) reader.push(queued);
    return true;
  }
  const wsListeners = socket.listeners('data') as ((chunk: Buffer) => void)[];
  const onData = (chunk: Buffer): void => reader.push(chunk);
  const reader = new FrameReader(onFrame, pong, (rest) => {
    socket.removeListener('data', onData);
    for (const listener of wsListeners) socket.on('data', listener);
    for (const listener of wsListeners) listener.call(socket, rest);
  });
  socket.removeAllListeners('data');
  socket.on('data', onData);
  return true;
}
