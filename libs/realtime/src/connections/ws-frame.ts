import { writeSync } from 'node:fs';
import type { Socket } from 'node:net';

/**
 * Server→client WebSocket text frames for the fan-out hot path, written straight to the
 * TCP socket. Server frames are never masked and permessage-deflate is off, so a frame is
 * just a header and the payload.
 *
 * A frame is built in a scratch buffer and handed to the kernel with one `write(2)` on the
 * socket's file descriptor when nothing is queued on the socket: no Buffer, write request
 * or callback per delivery, and the scratch buffer is reused as soon as the kernel has
 * copied it. Whatever the kernel does not take at once (a full send buffer), and every frame
 * of a socket that has data queued, goes through `socket.write`, so bytes stay in order
 * with everything else written to the socket (`ws`'s own frames, pings, close).
 */

const SCRATCH_BYTES = 64 * 1024;
let scratch = Buffer.allocUnsafe(SCRATCH_BYTES);

/** Size of a text frame's header for a payload of `length` bytes. */
function headerSize(length: number): number {
  return length < 126 ? 2 : length < 65536 ? 4 : 10;
}

function writeHeader(frame: Buffer, length: number): number {
  frame[0] = 0x81; // FIN + text
  if (length < 126) {
    frame[1] = length;
    return 2;
  }
  if (length < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
    return 4;
  }
  frame[1] = 127;
  frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
  frame.writeUInt32BE(length >>> 0, 6);
  return 10;
}

/** Something whose JSON is known, and whose UTF-8 bytes are encoded once, on first use. */
export interface EncodedJson {
  json: string;
  bytes?: Buffer;
}

function payloadLength(prefix: Buffer, parts: readonly EncodedJson[], suffix: Buffer): number {
  let length = prefix.length + suffix.length + parts.length - 1;
  for (const part of parts) length += (part.bytes ??= Buffer.from(part.json)).length;
  return length;
}

/** Writes the frame at the start of `target` (large enough); returns its size. */
function frameInto(
  target: Buffer,
  length: number,
  prefix: Buffer,
  parts: readonly EncodedJson[],
  suffix: Buffer,
): number {
  let offset = writeHeader(target, length);
  offset += prefix.copy(target, offset);
  for (let i = 0; i < parts.length; i++) {
    if (i > 0) target[offset++] = 0x2c; // ','
    offset += (parts[i].bytes as Buffer).copy(target, offset);
  }
  return offset + suffix.copy(target, offset);
}

/** One text frame whose payload is `prefix`, the parts' JSON joined by commas, then `suffix`. */
export function buildTextFrame(
  prefix: Buffer,
  parts: readonly EncodedJson[],
  suffix: Buffer,
): Buffer {
  const length = payloadLength(prefix, parts, suffix);
  const frame = Buffer.allocUnsafe(headerSize(length) + length);
  frameInto(frame, length, prefix, parts, suffix);
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

  constructor(readonly socket: Socket) {}

  /**
   * The file descriptor to write to directly, or -1 when the bytes must go through the
   * stream: something is queued (order), the socket is closing or closed (its handle is
   * gone as soon as the descriptor is closed, so the remembered number is never used after
   * that), encrypted (TLS writes through its own stream), or the platform has no
   * descriptor (Windows).
   */
  directFd(): number {
    const socket = this.socket as TcpSocket;
    if (socket.writableLength !== 0 || !socket._handle || !socket.writable) return -1;
    if (this.fd === undefined) {
      const fd = socket.encrypted ? undefined : socket._handle.fd;
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
 * Hands `length` bytes of `data` to the kernel if the socket is idle, and queues what it
 * did not take on the socket (copied, when `data` is the scratch buffer).
 */
function send(target: FrameSocket, data: Buffer, length: number): void {
  const fd = target.directFd();
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
  const length = payloadLength(prefix, parts, suffix);
  const size = headerSize(length) + length;
  if (size > scratch.length) {
    if (size > 16 * SCRATCH_BYTES) {
      // rare giant frame: its own buffer, not a scratch buffer kept forever
      const frame = Buffer.allocUnsafe(size);
      frameInto(frame, length, prefix, parts, suffix);
      send(target, frame, size);
      return;
    }
    scratch = Buffer.allocUnsafe(size);
  }
  frameInto(scratch, length, prefix, parts, suffix);
  send(target, scratch, size);
}
