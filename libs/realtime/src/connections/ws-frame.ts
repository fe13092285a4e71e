import { existsSync, writeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';

/**
 * Server→client WebSocket text frames for the fan-out hot path, written straight to the
 * TCP socket. Server frames are never masked and permessage-deflate is off, so a frame is
 * just a header and the payload.
 *
 * With the native frame writer (native/frame-writer, built by `npm install`), the frames of
 * idle sockets are collected in a batch (each frame's header and message prefix in one
 * arena, its change bytes shared by every frame that carries them) and handed to the kernel
 * by one native call, a `sendmsg(2)` (`writev` without SIGPIPE) per socket, at the latest at
 * the end of the tick (the tick's first EARLY_FRAMES frames as soon as they are there, then
 * each time the batch has doubled, so that subscribers need not wait for every other frame
 * to be built). Without it (or for a socket created with `native` false), a frame is built
 * in a scratch buffer and written with one `fs.writeSync` on the socket's file descriptor.
 * Either way there is no Buffer, write request or callback per delivery.
 *
 * Whatever the kernel does not take at once (a full send buffer), and every frame of a
 * socket that has data queued, goes through `socket.write`, so bytes stay in order with
 * everything else written to the socket (`ws`'s own frames, pings, close): whoever writes to
 * a socket otherwise first calls `flushFrameWrites` when `FrameSocket.inBatch` says the
 * batch holds a frame for it (WsConnection does).
 */

interface FrameWriterAddon {
  version: number;
  writeFrames(
    arena: Buffer,
    meta: Int32Array,
    count: number,
    bodies: Buffer[],
    results: Int32Array,
  ): void;
}

/** The argument layout this file speaks (FRAME_WRITER_VERSION in frame_writer.c). */
const ADDON_VERSION = 1;
const ADDON_PATH = join('native', 'frame-writer', 'build', 'Release', 'frame_writer.node');

/**
 * The addon, looked for in the nearest directory up from here that has it (src or dist);
 * otherwise why not.
 */
function loadFrameWriter(): { addon: FrameWriterAddon | null; why: string } {
  for (let dir = __dirname, i = 0; i < 8; i++) {
    const file = join(dir, ADDON_PATH);
    if (existsSync(file)) {
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const addon = require(file) as Partial<FrameWriterAddon>;
        if (typeof addon.writeFrames === 'function' && addon.version === ADDON_VERSION) {
          return { addon: addon as FrameWriterAddon, why: `loaded ${file}` };
        }
        return {
          addon: null,
          why: `${file} is version ${String(addon.version)}, not ${ADDON_VERSION}: run npm run build:native`,
        };
      } catch (e) {
        // built for another Node ABI or platform: the portable path
        return { addon: null, why: `${file} did not load: ${(e as Error).message}` };
      }
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return { addon: null, why: `no ${ADDON_PATH} above ${__dirname}: run npm run build:native` };
}

const loaded = loadFrameWriter();
const addon = loaded.addon;

/** Whether the native frame writer loaded (it is optional; see the module comment). */
export const nativeFrameWriterLoaded = addon !== null;
/** Where it was loaded from, or why it was not. */
export const nativeFrameWriterStatus = loaded.why;

const SCRATCH_BYTES = 64 * 1024;
let scratch = Buffer.allocUnsafe(SCRATCH_BYTES);

/** Size of a text frame's header for a payload of `length` bytes. */
function headerSize(length: number): number {
  return length < 126 ? 2 : length < 65536 ? 4 : 10;
}

/** Writes a text frame's header at `at`; returns its size. */
function writeHeader(frame: Buffer, at: number, length: number): number {
  frame[at] = 0x81; // FIN + text
  if (length < 126) {
    frame[at + 1] = length;
    return 2;
  }
  if (length < 65536) {
    frame[at + 1] = 126;
    frame.writeUInt16BE(length, at + 2);
    return 4;
  }
  frame[at + 1] = 127;
  frame.writeUInt32BE(Math.floor(length / 2 ** 32), at + 2);
  frame.writeUInt32BE(length >>> 0, at + 6);
  return 10;
}

/**
 * Something whose JSON is known, and whose UTF-8 bytes are encoded once, on first use; for
 * the native path also the tail of the last frame made with it first (see tailOf).
 */
export interface EncodedJson {
  json: string;
  bytes?: Buffer;
  /** the bytes after a frame's prefix: `tailParts` joined by commas, then `tailSuffix` */
  tail?: Buffer;
  tailSuffix?: Buffer;
  tailParts?: readonly EncodedJson[];
}

function bytesOf(part: EncodedJson): Buffer {
  return (part.bytes ??= Buffer.from(part.json));
}

/**
 * The bytes of a frame after its prefix: the parts' JSON joined by commas, then `suffix`.
 * Made once and shared by every frame that carries the same parts: kept on the first part
 * with the parts it was made of. One change's frames share its tail, and so do the frames
 * of a burst, where every subscriber's frame carries the same changes. (Frames of one
 * dispatch that start with the same change but carry different ones make it anew at each
 * switch: correct, only slower.)
 *
 * One code path for one part and for several: V8 optimizes this (and batchFrame, which
 * calls it) while only single changes come, and code that such traffic never ran would be
 * compiled as a deoptimization, taken when the first burst comes: the first changes after
 * a burst would then run in a lower tier, and pay for the recompilation
 * (docs/performance-history.md, "Where we stand"). So joinInto runs the same loop for one
 * part as for several.
 */
function tailOf(parts: readonly EncodedJson[], suffix: Buffer): Buffer {
  const first = parts[0];
  const kept = first.tailParts;
  if (kept !== undefined && first.tailSuffix === suffix && kept.length === parts.length) {
    let same = true;
    for (let i = 0; i < parts.length; i++) if (kept[i] !== parts[i]) same = false;
    if (same) return first.tail as Buffer;
  }
  const tail = Buffer.allocUnsafe(payloadLength(NO_BYTES, parts, suffix));
  joinInto(tail, 0, parts, suffix);
  first.tail = tail;
  first.tailSuffix = suffix;
  first.tailParts = parts.slice();
  return tail;
}

const NO_BYTES = Buffer.alloc(0);

function payloadLength(prefix: Buffer, parts: readonly EncodedJson[], suffix: Buffer): number {
  let length = prefix.length + suffix.length + parts.length - 1;
  for (const part of parts) length += bytesOf(part).length;
  return length;
}

/**
 * Writes the parts' JSON joined by commas, then `suffix`, into `target` at `at` (large
 * enough); returns where it ends. A comma follows every part and the suffix is written
 * over the last one: no branch that one part would leave untaken (see tailOf).
 */
function joinInto(
  target: Buffer,
  at: number,
  parts: readonly EncodedJson[],
  suffix: Buffer,
): number {
  let offset = at;
  for (let i = 0; i < parts.length; i++) {
    offset += bytesOf(parts[i]).copy(target, offset);
    target[offset++] = 0x2c; // ','
  }
  if (offset > at) offset--; // the last comma, where the suffix goes
  return offset + suffix.copy(target, offset);
}

/** Writes the frame into `target` at `at` (large enough); returns its size. */
function frameInto(
  target: Buffer,
  at: number,
  length: number,
  prefix: Buffer,
  parts: readonly EncodedJson[],
  suffix: Buffer,
): number {
  let offset = at + writeHeader(target, at, length);
  offset += prefix.copy(target, offset);
  return joinInto(target, offset, parts, suffix) - at;
}

/** One text frame whose payload is `prefix`, the parts' JSON joined by commas, then `suffix`. */
export function buildTextFrame(
  prefix: Buffer,
  parts: readonly EncodedJson[],
  suffix: Buffer,
): Buffer {
  const length = payloadLength(prefix, parts, suffix);
  const frame = Buffer.allocUnsafe(headerSize(length) + length);
  frameInto(frame, 0, length, prefix, parts, suffix);
  return frame;
}

type TcpSocket = Socket & { _handle?: { fd?: number } | null; encrypted?: boolean };

/**
 * A TCP socket that frames are written to, with what the hot path needs to know about it
 * kept in one small object of one shape (rather than properties added to the socket).
 */
export class FrameSocket {
  /** the descriptor, once read: -1 when there is none to write to (TLS, Windows) */
  private fd: number | undefined = undefined;
  /** frames held until the last frame of the current dispatch */
  staged: Buffer[] | null = null;
  /** the batch generation this socket has a frame in (see FrameBatch) */
  batchGeneration = 0;
  /** frames go through the native frame writer's batch (when it loaded) */
  readonly native: boolean;

  /** `native`: use the native frame writer if it loaded (default) */
  constructor(
    readonly socket: Socket,
    native = true,
  ) {
    this.native = native && addon !== null;
  }

  /** Still open for writing: not destroyed (its descriptor closed) and not ended. */
  get open(): boolean {
    const socket = this.socket as TcpSocket;
    return socket._handle != null && !socket.destroyed && socket.writable;
  }

  /** Open, and nothing queued on the stream: the kernel may take bytes directly. */
  get idle(): boolean {
    return this.socket.writableLength === 0 && this.open;
  }

  /** Whether the pending batch holds a frame for this socket (flushFrameWrites first). */
  get inBatch(): boolean {
    return this.batchGeneration === batch.generation && batch.count > 0;
  }

  /**
   * The file descriptor to write to directly, or -1 when the bytes must go through the
   * stream: something is queued (order), the socket is closing or closed (its handle is
   * gone as soon as the descriptor is closed, so the remembered number is never used after
   * that), encrypted (TLS writes through its own stream), or the platform has no
   * descriptor (Windows).
   */
  directFd(): number {
    if (!this.idle) return -1;
    if (this.fd === undefined) {
      const socket = this.socket as TcpSocket;
      const fd = socket.encrypted ? undefined : socket._handle?.fd;
      this.fd = typeof fd === 'number' && fd >= 0 ? fd : -1;
    }
    return this.fd;
  }

  /** Holds a frame until the last one of the current dispatch (or the end of the tick). */
  stage(frame: Buffer): void {
    if (this.staged !== null) {
      this.staged.push(frame);
      return;
    }
    this.staged = [frame];
    withStaged.add(this);
    if (!sweepScheduled) {
      sweepScheduled = true;
      process.nextTick(sweep);
    }
  }

  /**
   * Sends the frames held for this dispatch, and `last` after them, in one write (before a
   * close frame, say).
   */
  flushStaged(last: Buffer | null = null): void {
    const frames = this.staged;
    if (frames === null) return;
    withStaged.delete(this);
    this.staged = null;
    if (last) frames.push(last);
    const all = frames.length === 1 ? frames[0] : Buffer.concat(frames);
    send(this, all, all.length);
  }

  /** Forgets the frames held for this dispatch (the connection is being torn down). */
  discardStaged(): void {
    if (this.staged === null) return;
    withStaged.delete(this);
    this.staged = null;
  }
}

/**
 * Frames waiting for the native frame writer: per frame its socket's descriptor, its first
 * part in `arena` (header and message prefix, or a whole frame) and the index of its second
 * part in `bodies` (the change's bytes and the message suffix, shared by every frame that
 * carries the same change). A socket has at most one frame in a batch (a second one flushes
 * the batch first), so that what the kernel does not take of a frame can still be queued
 * on the socket before anything that follows it.
 */
const ARENA_BYTES = 256 * 1024;
const MAX_FRAMES = 4096;
/**
 * The first frames of a tick leave as soon as there are this many, not with the rest at the
 * end of the tick, and then each time the batch holds twice as many as the last call took
 * (16, 32, 64, …): while the fan-out goes on building the other frames, the subscribers
 * already read theirs (on the next core), and the reader is never left waiting for the
 * last frame to be built. A few more native calls per tick (6 at 1 000 frames); the first
 * delivery of a change to 1 000 subscribers comes about 1–3 ms sooner on a 2-core machine,
 * and the last no longer waits for the whole fan-out to be built (bench/README.md).
 */
export const EARLY_FRAMES = 16;
const META = 4; // fd, arena offset, arena length, body index

const batch = {
  arena: Buffer.allocUnsafe(addon ? ARENA_BYTES : 0),
  used: 0,
  meta: new Int32Array(addon ? MAX_FRAMES * META : 0),
  results: new Int32Array(addon ? MAX_FRAMES : 0),
  targets: [] as (FrameSocket | null)[],
  bodies: [] as Buffer[],
  bodyIndex: new Map<Buffer, number>(),
  count: 0,
  generation: 1,
  scheduled: false,
  /** the batch leaves when it holds this many frames (see EARLY_FRAMES); doubles each time */
  flushAt: EARLY_FRAMES,
};

function scheduledFlush(): void {
  batch.scheduled = false;
  flushFrameWrites();
}

/** Index of `body` in the batch's bodies (added when new). */
function bodySlot(body: Buffer): number {
  const last = batch.bodies.length - 1;
  if (last >= 0 && batch.bodies[last] === body) return last;
  let index = batch.bodyIndex.get(body);
  if (index === undefined) {
    index = batch.bodies.push(body) - 1;
    batch.bodyIndex.set(body, index);
  }
  return index;
}

/**
 * The descriptor to batch a frame of `target` for, or -1 when it must be written otherwise
 * (see directFd). A frame of this socket already in the batch leaves first, whichever way
 * the new one goes: what the kernel does not take of it is queued on the socket, which the
 * new frame must then follow.
 */
function batchFd(target: FrameSocket): number {
  if (target.inBatch) flushFrameWrites();
  return target.directFd();
}

/**
 * Reserves `headBytes` of the arena (flushing the batch first when it is full); returns the
 * offset, or -1 when the frame is too large for the arena.
 */
function reserve(headBytes: number): number {
  if (headBytes > ARENA_BYTES) return -1;
  if (batch.used + headBytes > ARENA_BYTES || batch.count === MAX_FRAMES) flushFrameWrites();
  return batch.used;
}

/** Adds a frame (arena [at, at + headBytes), then `body` if any) of `target` to the batch. */
function commit(
  target: FrameSocket,
  fd: number,
  at: number,
  headBytes: number,
  body: Buffer | null,
): void {
  const m = batch.count * META;
  batch.meta[m] = fd;
  batch.meta[m + 1] = at;
  batch.meta[m + 2] = headBytes;
  batch.meta[m + 3] = body === null ? -1 : bodySlot(body);
  batch.targets[batch.count++] = target;
  batch.used = at + headBytes;
  target.batchGeneration = batch.generation;
  if (!batch.scheduled) {
    batch.scheduled = true;
    batch.flushAt = EARLY_FRAMES;
    process.nextTick(scheduledFlush);
  } else if (batch.count === batch.flushAt) {
    batch.flushAt *= 2;
    flushFrameWrites();
  }
}

/**
 * Hands every frame of the pending batch to the kernel (one native call), and queues on
 * its socket whatever a socket did not take. Called at the end of the tick, and by anyone
 * about to write to a socket that `inBatch`.
 */
export function flushFrameWrites(): void {
  const count = batch.count;
  if (count === 0) return;
  const { arena, meta, results, targets, bodies } = batch;
  // Not by the kernel directly: a socket destroyed since its frame joined (its descriptor
  // closed, its number free to be reused), ended (a close frame is out), or one that has
  // bytes queued after all (whoever wrote them did not flush first): see below.
  for (let i = 0; i < count; i++) {
    if (!(targets[i] as FrameSocket).idle) meta[i * META] = -1;
  }
  try {
    (addon as FrameWriterAddon).writeFrames(arena, meta, count, bodies, results);
  } catch (e) {
    // a malformed batch, which the addon refuses before writing anything: a bug of ours.
    // The frames still go, through the streams; the warning says what to report.
    process.emitWarning(`native frame writer refused a batch: ${(e as Error).message}`);
    results.fill(0, 0, count);
  }
  // the batch is reset before any socket.write below, which must not find it half-done
  batch.count = 0;
  batch.used = 0;
  batch.generation++;
  for (let i = 0; i < count; i++) {
    const m = i * META;
    const at = meta[m + 1];
    const headBytes = meta[m + 2];
    const body = meta[m + 3] < 0 ? null : (bodies[meta[m + 3]] ?? null);
    const size = headBytes + (body === null ? 0 : body.length);
    const target = targets[i] as FrameSocket;
    targets[i] = null;
    const written = results[i] > 0 ? results[i] : 0;
    if (written >= size) continue;
    // destroyed or ended: nothing written to it now could arrive, or belong there
    if (meta[m] < 0 && !target.open) continue;
    // the kernel took part or none (full send buffer), or the socket failed: the stream
    // queues the rest (a copy: the arena is reused) or meets the error and closes the socket
    const head = written < headBytes ? arena.subarray(at + written, at + headBytes) : null;
    const tail = body === null ? null : body.subarray(Math.max(0, written - headBytes));
    target.socket.write(
      head === null
        ? (tail as Buffer)
        : tail === null
          ? Buffer.from(head)
          : Buffer.concat([head, tail]),
    );
  }
  bodies.length = 0;
  batch.bodyIndex.clear();
}

/**
 * Hands `length` bytes of `data` to the kernel if the socket is idle, and queues what it
 * did not take on the socket (copied, when `data` is the scratch buffer).
 */
function send(target: FrameSocket, data: Buffer, length: number): void {
  const native = target.native && data !== scratch;
  const fd = native ? batchFd(target) : target.directFd();
  if (fd >= 0 && native) {
    commit(target, fd, reserve(0), 0, length === data.length ? data : data.subarray(0, length));
    return;
  }
  let written = 0;
  if (fd >= 0) {
    try {
      written = writeSync(fd, data, 0, length);
    } catch {
      // EAGAIN: the send buffer is full; anything else (EPIPE, ECONNRESET): the stream
      // write below meets the same error and closes the socket the usual way
      written = 0;
    }
  }
  if (written >= length) return;
  const rest = data.subarray(written, length);
  target.socket.write(data === scratch ? Buffer.from(rest) : rest);
}

/** A ping without payload, as `ws`'s `ping()` sends it (server frames are not masked). */
export const PING_FRAME: Buffer = Buffer.from([0x89, 0x00]);

/**
 * Writes a whole frame that is never changed afterwards (e.g. PING_FRAME) to the socket,
 * after whatever is staged or batched for it: through the native batch when the socket is
 * idle, like a change's frame, so that a heartbeat to many sockets costs one native call per
 * batch rather than a stream write each.
 */
export function writeFrame(target: FrameSocket, frame: Buffer): void {
  if (target.staged !== null) target.flushStaged(frame);
  else send(target, frame, frame.length);
}

/** Sockets with staged frames. */
const withStaged = new Set<FrameSocket>();
let sweepScheduled = false;

/** Writes frames a dispatch left staged (it ended without announcing its last frame). */
function sweep(): void {
  sweepScheduled = false;
  for (const target of withStaged) target.flushStaged();
}

/**
 * Writes one text frame (`prefix`, the parts joined by commas, `suffix`) to the socket.
 * With `more`, the caller has further frames for this socket in the same dispatch: they are
 * collected and leave together with the last one, in one syscall (at the latest at the end
 * of the tick).
 */
export function writeTextFrame(
  target: FrameSocket,
  prefix: Buffer,
  parts: readonly EncodedJson[],
  suffix: Buffer,
  more: boolean,
): void {
  if (more || target.staged !== null) {
    const frame = buildTextFrame(prefix, parts, suffix);
    if (more) target.stage(frame);
    else target.flushStaged(frame);
    return;
  }
  if (target.native) {
    const fd = batchFd(target);
    if (fd >= 0 && batchFrame(target, fd, prefix, parts, suffix)) return;
  }
  const length = payloadLength(prefix, parts, suffix);
  const size = headerSize(length) + length;
  if (size > scratch.length) {
    if (size > 16 * SCRATCH_BYTES) {
      // rare giant frame: its own buffer, not a scratch buffer kept forever
      const frame = Buffer.allocUnsafe(size);
      frameInto(frame, 0, length, prefix, parts, suffix);
      send(target, frame, size);
      return;
    }
    scratch = Buffer.allocUnsafe(size);
  }
  frameInto(scratch, 0, length, prefix, parts, suffix);
  send(target, scratch, size);
}

/**
 * Adds the frame to the native batch: its header and prefix in the arena, then its tail
 * (tailOf), shared by every frame that carries the same changes. False when the frame does
 * not fit in the arena (the caller writes it itself).
 */
function batchFrame(
  target: FrameSocket,
  fd: number,
  prefix: Buffer,
  parts: readonly EncodedJson[],
  suffix: Buffer,
): boolean {
  const tail = tailOf(parts, suffix);
  const length = prefix.length + tail.length;
  const headBytes = headerSize(length) + prefix.length;
  const at = reserve(headBytes);
  if (at < 0) return false;
  const { arena } = batch;
  prefix.copy(arena, at + writeHeader(arena, at, length));
  commit(target, fd, at, headBytes, tail);
  return true;
}
