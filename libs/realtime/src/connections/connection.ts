import type { AnyAbility } from '@casl/ability';
import { randomUUID } from 'node:crypto';
import type { Principal, ServerEventType } from '../realtime.types';
import type { EmitOptions, SubscriptionSink } from '../subscriptions/subscription-sink';

/** A client connection, whatever the transport: the engine's sink plus its lifecycle. */
export abstract class Connection implements SubscriptionSink {
  readonly id = randomUUID();
  abstract readonly transport: 'websocket' | 'sse';
  open = true;
  /** the second whose expiry bucket holds this connection (ConnectionRegistry) */
  expiresAtSecond?: number;
  /** heartbeats sent without an answer (WebSocket pong) */
  missedPongs = 0;
  /** the connection's slot on the registry's HeartbeatWheel (-1: none) */
  heartbeatSlot = -1;
  /** frames the engine's current dispatch still owes this connection */
  framesDue = 0;

  constructor(
    public principal: Principal,
    public ability: AnyAbility,
    readonly remote: { ip: string | null; userAgent: string | null },
  ) {}

  abstract emitRaw(type: ServerEventType, dataJson: string, options?: EmitOptions): void;

  /** Ends the connection with a WebSocket close code (SSE: the stream ends). */
  abstract close(code: number, reason: string): void;

  /** Ends the connection at once, without a goodbye (heartbeat timeout). */
  abstract terminate(): void;

  /** Sends a heartbeat; WebSocket: a ping frame, SSE: a `heartbeat` event. */
  abstract heartbeat(): void;

  /** Resolves once the transport has finished closing (the peer answered, or it is gone). */
  abstract closed(): Promise<void>;

  /** Unsent bytes queued for this connection. */
  abstract bufferedBytes(): number;
}
