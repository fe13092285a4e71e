import { matchesQuery } from './query';
import type { Doc, NormalizedQuery, PendingWrite } from './types';

/**
 * The result set as the user should see it: the confirmed documents with this browser's
 * unconfirmed writes applied on top, in the order they were made. Pure, so the cache itself
 * only ever holds what the server confirmed and a rejected write simply disappears.
 */
export function applyPendingWrites(
  confirmed: ReadonlyMap<string, Doc>,
  writes: readonly PendingWrite[],
  query: NormalizedQuery,
): Doc[] {
  // The REST API writes the default database only, so the collection name identifies it.
  const relevant = writes.filter((w) => w.collection === query.collection);
  if (relevant.length === 0) return [...confirmed.values()];
  const view = new Map(confirmed);
  for (const write of relevant) {
    switch (write.kind) {
      case 'create': {
        const doc = { ...write.data, id: write.documentId };
        if (matchesQuery(query, doc) !== false) view.set(write.documentId, doc);
        break;
      }
      case 'update': {
        const current = view.get(write.documentId);
        if (current) {
          const next = { ...current, ...write.data };
          if (matchesQuery(query, next) === false) view.delete(write.documentId);
          else view.set(write.documentId, next);
        } else if (write.base) {
          // An edit that moves a document into this result set (e.g. a status change seen
          // from the other column) shows up here only when the client can tell it matches.
          const next = { ...write.base, ...write.data };
          if (matchesQuery(query, next) === true) view.set(write.documentId, next);
        }
        break;
      }
      case 'delete':
        view.delete(write.documentId);
        break;
      default: {
        const _exhaustive: never = write.kind;
        return _exhaustive;
      }
    }
  }
  return [...view.values()];
}
