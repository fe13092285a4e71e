import type { Socket } from 'node:net';

/**
 * Writes server→client WebSocket text frames straight to the TCP socket, for the fan-out
 * hot path: one allocation per frame, and the socket corked until the end of the current
 * tick, so that everything written to one client in one dispatch leaves in one syscall.
 * Server frames are never masked, and permessage-deflate is off, so the frame is just a
 * header and the payload; `ws` itself writes synchronously, so frames never interleave.
 */
const corked = new Set<Socket>();
let uncorkScheduled = false;

function uncorkAll(): void {
  uncorkScheduled = false;
  for (const socket of corked) socket.uncork();
  corked.clear();
}

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

/** One text frame whose payload is `prefix`, the parts' JSON joined by commas, then `suffix`. */
export function buildTextFrame(
  prefix: Buffer,
  parts: readonly EncodedJson[],
  suffix: Buffer,
): Buffer {
  let length = prefix.length + suffix.length + parts.length - 1;
  for (const part of parts) length += (part.bytes ??= Buffer.from(part.json)).length;
  const frame = Buffer.allocUnsafe(headerSize(length) + length);
  let offset = writeHeader(frame, length);
  offset += prefix.copy(frame, offset);
  for (let i = 0; i < parts.length; i++) {
    if (i > 0) frame[offset++] = 0x2c; // ','
    offset += (parts[i].bytes as Buffer).copy(frame, offset);
  }
  suffix.copy(frame, offset);
  return frame;
}

/** Writes a frame, corking the socket until the end of the tick. */
export function writeCorked(socket: Socket, frame: Buffer): void {
  if (!corked.has(socket)) {
    socket.cork();
    corked.add(socket);
    if (!uncorkScheduled) {
      uncorkScheduled = true;
      process.nextTick(uncorkAll);
    }
  }
  socket.write(frame);
}
