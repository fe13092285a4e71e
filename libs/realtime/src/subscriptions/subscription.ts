import type { ChangeRecord, Query } from '../realtime.types';
import type { SubscriptionSink } from './subscription-sink';

/** A change ready for one subscription: its event, its JSON, and its seq. */
export interface PreparedChange {
  seq: number;
  documentId: string;
  event: 'added' | 'modified' | 'removed';
  json: string;
  /** the wire object, kept only for throttled subscriptions (coalescing rewrites `event`) */
  wire?: Record<string, unknown>;
}

/** One live subscription of one connection. */
export class Subscription {
  /** greatest seq this subscription has been brought up to */
  position = 0;
  /** registering: live changes wait in `buffer` until the snapshot or replay is sent */
  pending = true;
  ended = false;
  buffer: ChangeRecord[] = [];
  /** changes prepared in the current dispatch, flushed as data_change frames */
  outbox: PreparedChange[] = [];
  readonly createdAt = new Date().toISOString();
  /** throttling: latest change per document inside the window */
  window?: Map<string, PreparedChange>;
  windowTimer?: NodeJS.Timeout;
  lastFlushAt = 0;
  /** top-level fields the filters read (checked per document against the ability) */
  filterFields: string[] = [];

  constructor(
    readonly id: string,
    readonly query: Query,
    readonly key: string,
    readonly sink: SubscriptionSink,
    readonly predicate: (doc: Record<string, unknown>) => boolean,
  ) {}
}
