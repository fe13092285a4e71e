import { isAfter } from './seq';
import type { Doc, Seq, WireChange } from './types';

export interface InitialChunk {
  documents: Doc[];
  chunkIndex: number;
  totalChunks: number;
  isLast: boolean;
  seq: Seq;
}

/**
 * The result set of one subscription, built from `initial_data` chunks and kept current by
 * `data_change`. It knows the last seq it applied, which is both the dedup guard (a change
 * at or below it is a replay: after a resume, a leader hand-off, or two server
 * subscriptions briefly overlapping) and the `resumeFrom` of the next reconnect.
 */
export class LiveQueryCache {
  private docs = new Map<string, Doc>();
  private loading: Map<string, Doc> | null = null;
  /** changes that came before the snapshot they follow was complete */
  private early: WireChange[] = [];
  private last: Seq | null = null;
  private isReady = false;

  constructor(private readonly idField = 'id') {}

  /** True once the initial result set is complete (or none was asked for). */
  get ready(): boolean {
    return this.isReady;
  }

  /** The last seq applied: the `resumeFrom` of a reconnect. */
  get lastSeq(): Seq | null {
    return this.last;
  }

  get size(): number {
    return this.docs.size;
  }

  /** The confirmed documents, keyed by id (read-only view for overlays). */
  get map(): ReadonlyMap<string, Doc> {
    return this.docs;
  }

  documents(): Doc[] {
    return [...this.docs.values()];
  }

  get(id: string): Doc | undefined {
    return this.docs.get(id);
  }

  /**
   * Collects one `initial_data` chunk. The result set switches to the new snapshot only
   * when the last chunk is in, so readers never see half a snapshot.
   * @returns true when the snapshot is complete
   */
  applyInitialChunk(chunk: InitialChunk): boolean {
    if (chunk.chunkIndex === 0 || !this.loading) this.loading = new Map();
    for (const doc of chunk.documents) this.loading.set(this.idOf(doc), doc);
    if (!chunk.isLast) return false;
    const docs = this.loading;
    this.loading = null;
    this.replace(docs, chunk.seq);
    return true;
  }

  /** Replaces everything with a complete snapshot taken at `seq`. */
  loadSnapshot(documents: Iterable<Doc>, seq: Seq | null): void {
    const docs = new Map<string, Doc>();
    for (const doc of documents) docs.set(this.idOf(doc), doc);
    this.loading = null;
    this.replace(docs, seq);
  }

  /** A subscription without initial data starts live and empty, at `seq` when known. */
  markReady(seq: Seq | null = null): void {
    if (this.isReady) return;
    this.replace(this.docs, seq ?? this.last);
  }

  /** Drops everything: the server could not resume, a fresh snapshot will follow. */
  reset(): void {
    this.docs = new Map();
    this.loading = null;
    this.early = [];
    this.last = null;
    this.isReady = false;
  }

  /**
   * Applies changes in order, skipping any at or below the last applied seq.
   * @returns the changes that were applied
   */
  applyChanges(changes: readonly WireChange[]): WireChange[] {
    if (!this.isReady) {
      this.early.push(...changes);
      return [];
    }
    const applied: WireChange[] = [];
    for (const change of changes) {
      if (!isAfter(change.seq, this.last)) continue;
      this.last = change.seq;
      if (change.event === 'removed' || change.document === null) {
        this.docs.delete(change.documentId);
      } else if (!this.isOlderThanCached(change.document, change.documentId)) {
        this.docs.set(change.documentId, change.document);
      }
      applied.push(change);
    }
    return applied;
  }

  /**
   * Puts a document the REST API returned into the set before its change arrives, so an
   * optimistic edit does not flicker back. Only documents already in the set are touched,
   * unless `insert` says the document belongs here; the change that follows (same or
   * newer version) then finds nothing to do.
   */
  writeThrough(doc: Doc, insert = false): boolean {
    const id = this.idOf(doc);
    if (!this.docs.has(id) && !insert) return false;
    if (this.isOlderThanCached(doc, id)) return false;
    this.docs.set(id, doc);
    return true;
  }

  writeThroughDelete(id: string): boolean {
    return this.docs.delete(id);
  }

  private replace(docs: Map<string, Doc>, seq: Seq | null): void {
    this.docs = docs;
    this.last = seq;
    this.isReady = true;
    const early = this.early;
    this.early = [];
    if (early.length) this.applyChanges(early);
  }

  /**
   * Versions only grow, so a document older than the cached one is a late echo of an
   * earlier state (typically after a write-through) and must not roll the cache back.
   */
  private isOlderThanCached(doc: Doc, id: string): boolean {
    const cached = this.docs.get(id);
    return (
      cached !== undefined &&
      typeof cached.version === 'number' &&
      typeof doc.version === 'number' &&
      doc.version < cached.version
    );
  }

  private idOf(doc: Doc): string {
    return String(doc[this.idField]);
  }
}
