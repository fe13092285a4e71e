import type { Query } from '../realtime.types';

interface CollectionEntry<S> {
  /** subscriptions to the whole collection */
  readonly collectionWide: Set<S>;
  /** documentId → subscriptions to that one document */
  readonly byDocument: Map<string, Set<S>>;
}

/**
 * The live subscriptions of a node, indexed by database → collection → document, so that
 * routing a change costs hash lookups and a visit of the subscriptions it may concern,
 * whatever the number of unrelated ones. Empty branches are removed as soon as they empty.
 *
 * A subscription is indexed under its `query` at `add`; the query must not change until
 * `remove`.
 */
export class SubscriptionIndex<S extends { readonly query: Query }> {
  private readonly databases = new Map<string, Map<string, CollectionEntry<S>>>();
  private count = 0;

  /** The number of subscriptions in the index. */
  get size(): number {
    return this.count;
  }

  /** Adds a subscription; returns false when it was already in the index. */
  add(subscription: S): boolean {
    const { database, collection } = subscription.query;
    const documentId = documentIdOf(subscription.query);
    let collections = this.databases.get(database);
    if (collections === undefined) {
      collections = new Map();
      this.databases.set(database, collections);
    }
    let entry = collections.get(collection);
    if (entry === undefined) {
      entry = { collectionWide: new Set(), byDocument: new Map() };
      collections.set(collection, entry);
    }
    let bucket: Set<S> | undefined;
    if (documentId === undefined) {
      bucket = entry.collectionWide;
    } else {
      bucket = entry.byDocument.get(documentId);
      if (bucket === undefined) {
        bucket = new Set();
        entry.byDocument.set(documentId, bucket);
      }
    }
    if (bucket.has(subscription)) return false;
    bucket.add(subscription);
    this.count++;
    return true;
  }

  /** Removes a subscription; returns false when it was not in the index. */
  remove(subscription: S): boolean {
    const { database, collection } = subscription.query;
    const collections = this.databases.get(database);
    const entry = collections?.get(collection);
    if (collections === undefined || entry === undefined) return false;
    const documentId = documentIdOf(subscription.query);
    const bucket =
      documentId === undefined ? entry.collectionWide : entry.byDocument.get(documentId);
    if (bucket === undefined || !bucket.delete(subscription)) return false;
    this.count--;
    if (documentId !== undefined && bucket.size === 0) entry.byDocument.delete(documentId);
    if (entry.collectionWide.size === 0 && entry.byDocument.size === 0) {
      collections.delete(collection);
      if (collections.size === 0) this.databases.delete(database);
    }
    return true;
  }

  /**
   * Calls `fn` for every subscription that a change of this document may concern: those to
   * its whole collection, then those to the document itself. Allocates nothing. `fn` may
   * remove subscriptions (a removed one that was not yet visited is skipped); one that `fn`
   * adds under the same key is visited too, as with `Set#forEach`.
   */
  forEachCandidate(
    database: string,
    collection: string,
    documentId: string,
    fn: (subscription: S) => void,
  ): void {
    const entry = this.databases.get(database)?.get(collection);
    if (entry === undefined) return;
    if (entry.collectionWide.size > 0) entry.collectionWide.forEach(fn);
    const documentSubscriptions = entry.byDocument.get(documentId);
    if (documentSubscriptions !== undefined) documentSubscriptions.forEach(fn);
  }
}

function documentIdOf(query: Query): string | undefined {
  if (query.resourceType === 'collection') return undefined;
  if (query.documentId === undefined) {
    throw new Error('A document subscription needs a documentId');
  }
  return query.documentId;
}
