import type { AnyAbility } from '@casl/ability';
import type { Principal, ServerEventMap, ServerEventType } from '../realtime.types';
import type { PreparedChange, Subscription } from './subscription';

export interface EmitOptions {
  /** the client's request id this message answers (WebSocket `id`) */
  requestId?: string;
  /** the seq a client resumes from after this message (SSE `id:`) */
  eventId?: string;
}

/**
 * What the engine delivers to: one client connection, whatever its transport. The engine
 * hands over the message's `data` already serialized, so that a change serialized once
 * can be framed for many sinks by concatenation.
 */
export interface SubscriptionSink {
  readonly id: string;
  readonly transport: 'websocket' | 'sse' | 'test';
  principal: Principal;
  ability: AnyAbility;
  /** the client's address and user agent, for the audit log */
  readonly remote: { ip: string | null; userAgent: string | null };
  /** false once the connection is closing; the engine then stops queueing to it */
  readonly open: boolean;
  emitRaw(type: ServerEventType, dataJson: string, options?: EmitOptions): void;
  /**
   * Optional fast path for `data_change`: the changes arrive serialized (and shared with
   * other subscribers); a transport may frame them without building the message string.
   * `more`: this sink gets further frames in the same dispatch (they may leave together).
   */
  emitChanges?(
    subscription: Subscription,
    changes: readonly PreparedChange[],
    more?: boolean,
  ): void;
  /** frames the current dispatch still owes this sink (kept by the engine) */
  framesDue?: number;
}

/** Sends a `data_change` of already serialized changes, by the sink's fast path if it has one. */
export function emitChanges(
  sink: SubscriptionSink,
  subscription: Subscription,
  changes: readonly PreparedChange[],
  more = false,
): void {
  if (sink.emitChanges) return sink.emitChanges(subscription, changes, more);
  let body = `{"subscriptionId":"${subscription.id}","changes":[${changes[0].json}`;
  for (let i = 1; i < changes.length; i++) body += ',' + changes[i].json;
  sink.emitRaw('data_change', body + ']}', { eventId: String(changes[changes.length - 1].seq) });
}

/** Serializes `data` and emits it. */
export function emit<T extends ServerEventType>(
  sink: SubscriptionSink,
  type: T,
  data: ServerEventMap[T],
  options?: EmitOptions,
): void {
  sink.emitRaw(type, JSON.stringify(data), options);
}
