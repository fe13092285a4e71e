import { existsSync } from 'node:fs';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import type WebSocket from 'ws';
import { MARKER_SEQ, MARKER_TS, type ReadDelay } from './common';
import { takeQueued } from './frame-reader';

interface FrameReaderAddon {
  version: number;
  start(
    callback: (kind: number, a: number, b: number, c: Buffer | number) => void,
    tsMarker: Buffer,
    seqMarker: Buffer,
    records: Float64Array,
    kernelTimes: boolean,
  ): void;
  add(fd: number, client: number): number;
  push(slot: number, bytes: Buffer): void;
  remove(slot: number): void;
  readDelay(): [reads: number, sumUs: number, maxUs: number, unstamped: number];
}

/** The argument layout this file speaks (FRAME_READER_VERSION in frame_reader.c). */
const ADDON_VERSION = 2;
const ADDON_PATH = join('native', 'frame-reader', 'build', 'Release', 'frame_reader.node');

/** The addon from the nearest directory up from here that has it (src or the bench build). */
function loadAddon(): { addon: FrameReaderAddon | null; why: string } {
  for (let dir = __dirname, i = 0; i < 8; i++) {
    const file = join(dir, ADDON_PATH);
    if (existsSync(file)) {
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const addon = require(file) as Partial<FrameReaderAddon>;
        if (typeof addon.start === 'function' && addon.version === ADDON_VERSION) {
          return { addon: addon as FrameReaderAddon, why: `loaded ${file}` };
        }
        return { addon: null, why: `${file} is version ${String(addon.version)}` };
      } catch (e) {
        return { addon: null, why: `${file} did not load: ${(e as Error).message}` };
      }
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return { addon: null, why: `no ${ADDON_PATH} above ${__dirname}: run npm run build:native` };
}

/** The fields of net's TCP handle that attach uses. */
interface NetHandle {
  fd: number;
  reading: boolean;
  readStart(): number;
  readStop(): number;
}

/** A handle's readStart while the native reader reads its socket. */
const NOT_NOW = (): number => 0;

/** Receives what the native reader finds: one call per change marker, then the counts. */
export interface NativeSink {
  record(client: number, sentUs: number, seq: number, recvUs: number): void;
  counts(frames: number, bytes: number): void;
}

/**
 * The load generator's subscribed clients' frames read in C (native/frame-reader): one epoll
 * set for every attached socket, one wake-up of JavaScript per batch of ready sockets, and
 * per frame no JavaScript at all but the record of each change marker it carries. A ping is
 * answered through the client's `ws` (`pong`); a close, a fragment or a frame that breaks the
 * protocol goes back, with every byte after it, to the client's `ws`, which reads its socket
 * again from then on (as the JavaScript FrameReader hands back).
 *
 * Why: the load generator shares the machine's two cores with the server under test, and
 * with the JavaScript FrameReader it spent 7–9 µs of its core per frame, 40 % of it in user
 * space, once per socket per read (libuv's callback, Node's `onStreamRead`, the parse). At
 * N = 1 000 and 5 000 that, not the server, bounded how soon a change's last subscriber had
 * it (bench/README.md, "How the load generator reads frames").
 *
 * With `kernelTimes` a change's received time is when the kernel received the frame
 * (SO_TIMESTAMPNS), not when this process read it: the latency is the server's and the
 * network's, without the load generator's own delays (it reads 10 000 sockets on a CPU it
 * shares with the publisher and the machine's other tasks).
 */
export class NativeReader {
  private readonly clients: (WebSocket | undefined)[] = [];
  private readonly slots = new Map<WebSocket, number>();

  private constructor(private readonly addon: FrameReaderAddon) {}

  /** The reader, or null (and why) when the addon is not built or does not load. */
  static open(
    sink: NativeSink,
    kernelTimes: boolean,
  ): { reader: NativeReader | null; why: string } {
    const loaded = loadAddon();
    if (!loaded.addon) return { reader: null, why: loaded.why };
    const reader = new NativeReader(loaded.addon);
    const records = new Float64Array(4 * 8192);
    loaded.addon.start(
      (kind, a, b, c) => reader.onEvent(sink, records, kind, a, b, c),
      Buffer.from(MARKER_TS, 'latin1'),
      Buffer.from(MARKER_SEQ, 'latin1'),
      records,
      kernelTimes,
    );
    return { reader, why: loaded.why };
  }

  /**
   * From now on the client's frames are read natively, the bytes its socket's stream already
   * holds first (`ws` puts back what came with the upgrade response: Nchan sends a frame at
   * once). False, and the client left as it was, when ws's Receiver holds part of a frame or
   * ws's and net's fields are not where this expects them (`_socket`, `_receiver`,
   * `_handle`).
   *
   * The socket's handle stops reading, and its `readStart` is shadowed until the socket is
   * handed back: net starts a handle reading again on its own (a `resume()`, a `read()`, the
   * `resume` that adding a `'data'` listener schedules), and two readers of one socket
   * would each get half of its frames.
   */
  attach(ws: WebSocket, client: number): boolean {
    const own = ws as unknown as {
      _socket?: Socket | null;
      _receiver?: { _bufferedBytes?: number };
    };
    const socket = own._socket;
    if (!socket) return false;
    if (typeof own._receiver?._bufferedBytes !== 'number' || own._receiver._bufferedBytes > 0) {
      return false;
    }
    const handle = (socket as unknown as { _handle?: NetHandle | null })._handle;
    if (
      !handle ||
      typeof handle.fd !== 'number' ||
      handle.fd < 0 ||
      typeof handle.readStop !== 'function' ||
      typeof handle.readStart !== 'function'
    ) {
      return false;
    }
    if (handle.reading) handle.readStop();
    handle.reading = false;
    handle.readStart = NOT_NOW;
    const queued = takeQueued(socket);
    const slot = this.addon.add(handle.fd, client);
    this.clients[slot] = ws;
    this.slots.set(ws, slot);
    if (queued !== null) this.addon.push(slot, queued);
    return true;
  }

  /** The read delay since the previous call (none without kernelTimes). */
  readDelay(): ReadDelay {
    const [reads, sumUs, maxUs, unstamped] = this.addon.readDelay();
    return { reads, meanUs: reads > 0 ? sumUs / reads : 0, maxUs, unstamped };
  }

  /** Stops reading the client's socket natively; its `ws` reads it again from here on. */
  detach(ws: WebSocket): void {
    const slot = this.slots.get(ws);
    if (slot === undefined) return;
    this.addon.remove(slot);
    this.giveBack(ws, slot, null);
  }

  /**
   * The client's socket back to its `ws` (the addon has let go of the slot): the handle's own
   * `readStart` again, `rest` (bytes the addon read and did not handle) first, then reads.
   */
  private giveBack(ws: WebSocket, slot: number, rest: Buffer | null): void {
    this.clients[slot] = undefined;
    this.slots.delete(ws);
    const socket = (ws as unknown as { _socket?: Socket | null })._socket;
    const handle = (socket as unknown as { _handle?: NetHandle | null } | null)?._handle;
    if (!socket || !handle) return;
    delete (handle as Partial<NetHandle>).readStart; // (the prototype's again)
    if (rest !== null && rest.length > 0) socket.push(rest);
    socket.resume(); // (net starts the handle reading)
  }

  private onEvent(
    sink: NativeSink,
    records: Float64Array,
    kind: number,
    a: number,
    b: number,
    c: Buffer | number,
  ): void {
    if (kind === 0) {
      for (let i = 0, o = 0; i < a; i++, o += 4) {
        sink.record(records[o], records[o + 1], records[o + 2], records[o + 3]);
      }
      sink.counts(b, c as number);
      return;
    }
    const ws = this.clients[a];
    if (ws === undefined) return;
    if (kind === 1) {
      ws.pong(c as Buffer);
      return;
    }
    this.giveBack(ws, a, c as Buffer); // (handed back)
  }
}
