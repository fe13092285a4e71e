import type { AnyAbility } from '@casl/ability';
import type { WebSocket } from 'ws';
import type { Principal, ServerEventType } from '../realtime.types';
import type { EmitOptions } from '../subscriptions/subscription-sink';
import { Connection } from './connection';

/** A WebSocket client. Frames are built by concatenation around the engine's JSON. */
export class WsConnection extends Connection {
  readonly transport = 'websocket' as const;
  /** token bucket of client messages */
  tokens: number;
  lastRefill = Date.now();
  /** rate-limited messages in a row */
  strikes = 0;

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
