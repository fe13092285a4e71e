import type { ChangeRecord, Query } from '../realtime.types';
import type { SubscriptionSink } from './subscription-sink';

/**
 * A change as some subscribers see it: its event and its JSON (and, once a transport asked
 * for them, its UTF-8 bytes). Shared by every subscriber with the same view of the change,
 * so it is never mutated once made.
 */
export interface PreparedChange {
  seq: number;
  documentId: string;
  event: 'added' | 'modified' | 'removed';
  json: string;
  bytes?: Buffer;
}

const NO_FIELDS: readonly string[] = [];

/** One live subscription of one connection. */
export class Subscription {
  /** greatest seq this subscription has been brought up to */
  position = 0;
  /** registering: live changes wait in `buffer` until the snapshot or replay is sent */
  pending = true;
  ended = false;
  buffer: ChangeRecord[] | null = null;
  /** changes prepared in the current dispatch, flushed as data_change frames */
  outbox: PreparedChange[] | null = null;
  /** ms since the epoch */
  readonly createdAt = Date.now();
  /** throttling: latest change per document inside the window */
  window?: Map<string, PreparedChange>;
  windowTimer?: NodeJS.Timeout;
  lastFlushAt = 0;
  /** top-level fields the filters read (checked per document against the ability) */
  filterFields: readonly string[] = NO_FIELDS;
  /** equal for subscribers whose abilities read the collection alike (see readRulesKey) */
  readKey = '';
  /** the WebSocket frame prefix `{"type":"data_change","data":{"subscriptionId":…,"changes":[` */
  wsPrefix?: Buffer;

  constructor(
    readonly id: string,
    readonly query: Query,
    readonly sink: SubscriptionSink,
    readonly predicate: (doc: Record<string, unknown>) => boolean,
  ) {}
}
