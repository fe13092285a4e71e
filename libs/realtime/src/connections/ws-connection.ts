import type { AnyAbility } from '@casl/ability';
import type { WebSocket } from 'ws';
import type { Principal, ServerEventType } from '../realtime.types';
import type { EmitOptions } from '../subscriptions/subscription-sink';
import type { Socket } from 'node:net';
import type { PreparedChange } from '../subscriptions/subscription';
import { Connection } from './connection';
import { buildTextFrame, writeCorked } from './ws-frame';

const SUFFIX = Buffer.from(']}}');

/** A WebSocket client. Frames are built by concatenation around the engine's JSON. */
export class WsConnection extends Connection {
  readonly transport = 'websocket' as const;
  /** token bucket of client messages */
  tokens: number;
  lastRefill = Date.now();
  /** rate-limited messages in a row */
  strikes = 0;
  /** `{"type":"data_change","data":{"subscriptionId":"…","changes":[` per subscription */
  private readonly prefixes = new Map<string, Buffer>();

  constructor(
    readonly socket: WebSocket,
    principal: Principal,
    ability: AnyAbility,
    remote: { ip: string | null; userAgent: string | null },
    burst: number,
    private readonly onOverflow: (connection: WsConnection) => void,
    private readonly maxBufferedBytes: number,
  ) {
    super(principal, ability, remote);
    this.tokens = burst;
  }

  emitRaw(type: ServerEventType, dataJson: string, options?: EmitOptions): void {
    if (!this.open) return;
    const frame =
      options?.requestId !== undefined
        ? `{"type":"${type}","id":${JSON.stringify(options.requestId)},"data":${dataJson}}`
        : `{"type":"${type}","data":${dataJson}}`;
    this.socket.send(frame);
    if (this.socket.bufferedAmount > this.maxBufferedBytes) this.onOverflow(this);
  }

  /** The fan-out fast path: frame the shared change bytes and write them to the socket. */
  emitChanges(subscriptionId: string, changes: readonly PreparedChange[]): void {
    if (!this.open) return;
    const raw = (this.socket as unknown as { _socket?: Socket })._socket;
    if (this.socket.readyState !== 1 || !raw) return;
    let prefix = this.prefixes.get(subscriptionId);
    if (!prefix) {
      prefix = Buffer.from(
        `{"type":"data_change","data":{"subscriptionId":"${subscriptionId}","changes":[`,
      );
      this.prefixes.set(subscriptionId, prefix);
    }
    const parts = changes.map((c) => (c.bytes ??= Buffer.from(c.json)));
    writeCorked(raw, buildTextFrame(prefix, parts, SUFFIX));
    if (this.socket.bufferedAmount > this.maxBufferedBytes) this.onOverflow(this);
  }

  /** Forgets a subscription's cached frame prefix. */
  forget(subscriptionId: string): void {
    this.prefixes.delete(subscriptionId);
  }

  close(code: number, reason: string): void {
    this.open = false;
    this.socket.close(code, reason);
  }

  terminate(): void {
    this.open = false;
    this.socket.terminate();
  }

  heartbeat(): void {
    this.socket.ping();
  }

  bufferedBytes(): number {
    return this.socket.bufferedAmount;
  }
}
