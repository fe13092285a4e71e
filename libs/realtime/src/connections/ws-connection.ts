import type { AnyAbility } from '@casl/ability';
import type { RawData, WebSocket } from 'ws';
import type { Principal, ServerEventType } from '../realtime.types';
import type { EmitOptions } from '../subscriptions/subscription-sink';
import type { Socket } from 'node:net';
import type { PreparedChange, Subscription } from '../subscriptions/subscription';
import { Connection } from './connection';
import { flushFrameWrites, FrameSocket, PING_FRAME, writeFrame, writeTextFrame } from './ws-frame';

const SUFFIX = Buffer.from(']}}');
const CONNECTION = Symbol('realtime.connection');

/** What a WebSocket connection reports to (the gateway): one object for all connections. */
export interface WsConnectionOwner {
  onMessage(connection: WsConnection, data: RawData, isBinary: boolean): void;
  onClose(connection: WsConnection): void;
  onOverflow(connection: WsConnection): void;
}

// Listeners shared by every socket (no closures per connection): `this` is the socket.
function onMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
  const c = (this as unknown as Record<symbol, WsConnection>)[CONNECTION];
  c.owner.onMessage(c, data, isBinary);
}
function onPong(this: WebSocket): void {
  (this as unknown as Record<symbol, WsConnection>)[CONNECTION].missedPongs = 0;
}
/** The connection of a socket, once the gateway has admitted it. */
export function wsConnectionOf(socket: WebSocket): WsConnection | undefined {
  return (socket as unknown as Record<symbol, WsConnection | undefined>)[CONNECTION];
}
function onError(): void {
  // the socket closes after an error; 'close' does the cleanup
}

/**
 * A WebSocket client. Frames are built by concatenation around the engine's JSON.
 *
 * A slow consumer (closed 4009) is one whose backlog was already over maxBufferedBytes
 * when a new frame came. The frame itself does not count: one frame larger than the limit
 * (a big transaction, or a replay of one) would otherwise close the connection every
 * time, and a resume would replay the same frame forever. So every connection gets at
 * least the frame that finds it within the limit.
 */
export class WsConnection extends Connection {
  readonly transport = 'websocket' as const;
  /** token bucket of client messages */
  tokens: number;
  lastRefill = Date.now();
  /** rate-limited messages in a row */
  strikes = 0;
  /** the TCP socket under the WebSocket, for the fan-out fast path (on first use) */
  private frames: FrameSocket | null = null;

  constructor(
    readonly socket: WebSocket,
    principal: Principal,
    ability: AnyAbility,
    remote: { ip: string | null; userAgent: string | null },
    burst: number,
    readonly owner: WsConnectionOwner,
    private readonly maxBufferedBytes: number,
    /** fan-out frames through the native frame writer when it loaded */
    private readonly nativeWrites = true,
  ) {
    super(principal, ability, remote);
    this.tokens = burst;
    (socket as unknown as Record<symbol, WsConnection>)[CONNECTION] = this;
    // No 'close' listener of ours: Nest already keeps one on every client socket for the
    // gateway's handleDisconnect, which reports the close (owner.onClose). A third listener
    // beside it and ws's own would grow the socket's listener array to 19 slots, about
    // 140 bytes per connection.
    socket.on('error', onError);
    socket.on('pong', onPong);
  }

  /** Starts reading client messages (once the connection is admitted). */
  listen(): void {
    this.socket.on('message', onMessage);
  }

  /** Frames this socket has in the native batch leave before anything else written to it. */
  private beforeOwnWrite(): void {
    if (this.frames?.inBatch) flushFrameWrites();
  }

  emitRaw(type: ServerEventType, dataJson: string, options?: EmitOptions): void {
    if (!this.open) return;
    this.beforeOwnWrite();
    const frame =
      options?.requestId !== undefined
        ? `{"type":"${type}","id":${JSON.stringify(options.requestId)},"data":${dataJson}}`
        : `{"type":"${type}","data":${dataJson}}`;
    const backlog = this.socket.bufferedAmount;
    this.socket.send(frame);
    if (backlog > this.maxBufferedBytes) this.owner.onOverflow(this);
  }

  /** The TCP socket to write frames to directly, made on first use; null when there is none. */
  private frameSocket(): FrameSocket | null {
    if (this.frames !== null) return this.frames;
    const raw = (this.socket as unknown as { _socket?: Socket })._socket;
    return raw ? (this.frames = new FrameSocket(raw, this.nativeWrites)) : null;
  }

  /** The fan-out fast path: frame the shared change bytes and write them to the socket. */
  emitChanges(subscription: Subscription, changes: readonly PreparedChange[], more = false): void {
    if (!this.open || this.socket.readyState !== 1) return;
    const target = this.frameSocket();
    if (target === null) return;
    const prefix = (subscription.wsPrefix ??= Buffer.from(
      `{"type":"data_change","data":{"subscriptionId":"${subscription.id}","changes":[`,
    ));
    // the backlog this frame joins, not the frame itself (see the class comment); nothing
    // queued on the TCP socket is the hot path's case, read without ws's getter
    const backlog = target.socket.writableLength === 0 ? 0 : this.socket.bufferedAmount;
    writeTextFrame(target, prefix, changes, SUFFIX, more);
    if (backlog > this.maxBufferedBytes) this.owner.onOverflow(this);
  }

  close(code: number, reason: string): void {
    this.open = false;
    this.frames?.flushStaged(); // data frames before the close frame, never after it
    this.beforeOwnWrite();
    this.socket.close(code, reason);
  }

  terminate(): void {
    this.open = false;
    this.frames?.discardStaged();
    this.beforeOwnWrite(); // the descriptor closes now: nothing may be written to it later
    this.socket.terminate();
  }

  closed(): Promise<void> {
    if (this.socket.readyState === 3) return Promise.resolve();
    return new Promise((resolve) => this.socket.once('close', () => resolve()));
  }

  /**
   * A ping frame, written like a change's frame (the native batch: a heartbeat slot's pings
   * leave in one native call); `ws` reads the pong. Nothing once the socket is closing, as
   * `ws`'s own `ping()` would send nothing.
   */
  heartbeat(): void {
    if (this.socket.readyState !== 1) return;
    const target = this.frameSocket();
    if (target !== null) {
      writeFrame(target, PING_FRAME);
      return;
    }
    this.beforeOwnWrite();
    this.socket.ping();
  }

  bufferedBytes(): number {
    return this.socket.bufferedAmount;
  }
}
