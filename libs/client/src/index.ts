/**
 * Browser and Node client for the realtime protocol (PROTOCOL.md): live queries over
 * WebSocket or SSE, one connection shared by the tabs of an origin, optimistic writes
 * queued while offline, and conflict resolution.
 */
export {
  createRealtimeClient,
  RealtimeClient,
  RealtimeWriteError,
  type Collection,
  type CollectionOptions,
  type ConflictEvent,
  type DataInfo,
  type LiveQuery,
  type RealtimeClientEvents,
  type RealtimeClientOptions,
  type SubscriptionHandlers,
  type WriteOptions,
} from './realtime-client';
export {
  fieldLevelMerge,
  resolveConflict,
  type ConflictResolution,
  type ConflictStrategy,
  type MergeFunction,
} from './conflict';
export { LiveQueryCache, type InitialChunk } from './live-query-cache';
export {
  MemoryQueueStorage,
  OfflineQueue,
  type DrainResult,
  type QueueStorage,
  type SendResult,
} from './offline-queue';
export { IndexedDbQueueStorage } from './indexeddb-queue-storage';
export { Backoff, type BackoffOptions } from './backoff';
export { decodeJwtExp, type TokenProvider } from './token';
export { normalizeQuery, queryKey } from './query';
export { RealtimeRequestError } from './transport';
export type * from './types';
