/**
 * Wire and engine types shared by every part of the library. PROTOCOL.md is the contract;
 * these types are its TypeScript form.
 */

/** A decimal string; every committed change of a database gets one. */
export type Seq = string;

export type FieldOperator =
  | 'eq'
  | 'ne'
  | 'gt'
  | 'gte'
  | 'lt'
  | 'lte'
  | 'in'
  | 'nin'
  | 'contains'
  | 'startsWith'
  | 'endsWith'
  | 'exists';

export interface FieldFilter {
  type: 'field';
  field: string;
  operator: FieldOperator;
  value?: unknown;
  caseSensitive?: boolean;
}

export interface UserFilter {
  type: 'user';
  field: string;
}

export interface CustomFilter {
  type: 'custom';
  name: string;
  params?: Record<string, unknown>;
}

export type QueryFilter = FieldFilter | UserFilter | CustomFilter;

/** A validated, normalised query (defaults filled in, keys in a fixed order). */
export interface Query {
  resourceType: 'collection' | 'document';
  database: string;
  collection: string;
  documentId?: string;
  fieldPath?: string;
  filters: QueryFilter[];
  includeInitialData: boolean;
  includeMetadata: boolean;
  batchSize: number;
  throttleMs: number;
}

/** The kind of a registered field, derived from the TypeORM column. */
export type FieldKind = 'string' | 'number' | 'boolean' | 'date' | 'array' | 'json';

/** What the validator and the matcher know of a registered collection. */
export interface CollectionSchema {
  name: string;
  /** property name → kind; dotted paths are allowed below `json` fields only */
  fields: Record<string, FieldKind>;
  primaryKey: string;
}

/** The authenticated user behind a connection or a request. */
export interface Principal {
  userId: string;
  roles: string[];
  attrs: Record<string, unknown>;
  /** seconds since the epoch */
  exp: number;
}

/** A plain JSON document (dates as ISO strings). */
export type Doc = Record<string, unknown>;

export type Operation = 'insert' | 'update' | 'delete';
export type ChangeEvent = 'added' | 'modified' | 'removed';

/** One committed change, as captured and stored in the change log. */
export interface ChangeRecord {
  seq: Seq;
  database: string;
  collection: string;
  documentId: string;
  operation: Operation;
  before: Doc | null;
  after: Doc | null;
  changedFields: string[];
  actorId: string | null;
  /** ISO time of the commit */
  timestamp: string;
  version: number | null;
  /** ms since the epoch when the change was committed (for latency metrics); not on the wire */
  committedAt?: number;
}

/** One change as a subscriber sees it (PROTOCOL.md "Change"). */
export interface WireChange {
  seq: Seq;
  operation: Operation;
  event: ChangeEvent;
  database: string;
  collection: string;
  documentId: string;
  document: Doc | null;
  changedFields: string[];
  metadata?: { timestamp: string; actorId: string | null; version: number | null };
}

/** PROTOCOL.md error codes. */
export type ErrorCode =
  | 'invalid_message'
  | 'unknown_type'
  | 'invalid_query'
  | 'forbidden'
  | 'not_found'
  | 'rate_limited'
  | 'limit_exceeded'
  | 'token_expired'
  | 'internal';

export interface ErrorDetail {
  path: string;
  message: string;
}

/** Server → client messages and their data. */
export interface ServerEventMap {
  connection_established: {
    connectionId: string;
    userId: string;
    serverTime: string;
    heartbeatIntervalMs: number;
    protocolVersion: 1;
  };
  subscription_created: { subscriptionId: string; query: Query };
  initial_data: {
    subscriptionId: string;
    documents: Doc[];
    chunkIndex: number;
    totalChunks: number;
    isLast: boolean;
    seq: Seq;
  };
  data_change: { subscriptionId: string; changes: WireChange[] };
  subscription_ended: { subscriptionId: string; reason: 'revoked' | 'server_shutdown' };
  resync_required: { subscriptionId: string };
  unsubscribed: { subscriptionId: string };
  pong: { ts: unknown; serverTime: string };
  subscriptions: {
    subscriptions: { subscriptionId: string; query: Query; createdAt: string }[];
  };
  auth_ok: { expiresAt: string };
  error: { code: ErrorCode; message: string; details?: ErrorDetail[] };
  heartbeat: { timestamp: string };
}

export type ServerEventType = keyof ServerEventMap;
