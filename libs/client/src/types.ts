/**
 * Public types of the client. Wire types come from the server library as types only, so the
 * bundle never pulls Nest in; everything here is erased at build time.
 */
import type {
  ChangeEvent,
  Doc,
  ErrorCode,
  ErrorDetail,
  FieldFilter,
  Query,
  QueryFilter,
  Seq,
  ServerEventMap,
  ServerEventType,
  WireChange,
} from '@app/realtime/realtime.types';

export type {
  ChangeEvent,
  Doc,
  ErrorCode,
  ErrorDetail,
  FieldFilter,
  Query,
  QueryFilter,
  Seq,
  ServerEventMap,
  ServerEventType,
  WireChange,
};

/** One frame from the server, `type` and `data` correlated. */
export type ServerMessage = {
  [K in ServerEventType]: { type: K; id?: string; data: ServerEventMap[K] };
}[ServerEventType];

/**
 * A query as an application writes it: only `collection` is required; the rest takes the
 * defaults of PROTOCOL.md ("Query").
 */
export interface QueryInput {
  collection: string;
  resourceType?: 'collection' | 'document';
  /** @default 'default' */
  database?: string;
  documentId?: string;
  fieldPath?: string;
  filters?: QueryFilter[];
  /** @default false */
  includeInitialData?: boolean;
  /** @default true */
  includeMetadata?: boolean;
  batchSize?: number;
  throttleMs?: number;
}

/** What the client sends: `QueryInput` with the documented defaults filled in. */
export type NormalizedQuery = QueryInput &
  Required<
    Pick<
      QueryInput,
      'resourceType' | 'database' | 'filters' | 'includeInitialData' | 'includeMetadata'
    >
  >;

export type TransportKind = 'websocket' | 'sse';
export type TransportPreference = TransportKind | 'auto';

/**
 * `idle` before start, `connecting` for the first attempt, `open` once the server said
 * `connection_established`, `reconnecting` while backing off, `offline` while the browser
 * reports no network, `error` after a fatal close (1008), `closed` after `client.close()`.
 */
export type ConnectionState =
  'idle' | 'connecting' | 'open' | 'reconnecting' | 'offline' | 'error' | 'closed';

export type TabRole = 'leader' | 'follower';

/**
 * `loading` until the initial data (or the subscription) is in place, `live` afterwards,
 * `resyncing` while a fresh snapshot replaces a cache the server could not resume,
 * `ended` when the server ended it (permission revoked), `error` when it was refused.
 */
export type SubscriptionStatus = 'loading' | 'live' | 'resyncing' | 'ended' | 'error';

export interface RealtimeErrorInfo {
  code: ErrorCode | 'connection_failed' | 'subscription_ended' | 'http_error';
  message: string;
  details?: ErrorDetail[];
  status?: number;
}

/** A write waiting for, or being sent to, the REST API. Persisted as plain JSON. */
export interface PendingWrite {
  opId: string;
  /** the tab that made it, so that only that tab reports its outcome */
  tabId: string;
  /** monotonic within a tab, then by time across tabs: the replay order */
  order: number;
  createdAt: number;
  collection: string;
  kind: 'create' | 'update' | 'delete';
  /** for `create`, a local id (`local:<opId>`) until the server assigns one */
  documentId: string;
  /** `create`: the new document; `update`: the patch */
  data?: Doc;
  /** expected version for `update` / `delete` */
  version?: number;
  /** the document as the tab saw it when the write was made: `base` of a merge */
  base?: Doc | null;
  /**
   * The strategy the writing tab chose. Another tab may send the write (the leader), so a
   * named strategy travels with it; a merge function cannot, and the sending tab uses its
   * own for the collection.
   */
  strategy?: 'server-wins' | 'client-wins' | 'merge';
  attempts: number;
}

export type WriteOutcome =
  | { status: 'applied'; document: Doc | null }
  | {
      status: 'conflict';
      strategy: string;
      /** what the server holds after resolution (null when deleted) */
      document: Doc | null;
      /** the server's document when the conflict was detected */
      server: Doc | null;
    }
  | { status: 'rejected'; error: RealtimeErrorInfo };
