import { LiveQueryCache } from './live-query-cache';
import type { WireChange } from './types';

function change(
  seq: string,
  event: WireChange['event'],
  id: string,
  fields: Record<string, unknown> = {},
): WireChange {
  return {
    seq,
    event,
    operation: event === 'added' ? 'insert' : event === 'removed' ? 'delete' : 'update',
    database: 'default',
    collection: 'tasks',
    documentId: id,
    document: event === 'removed' ? null : { id, ...fields },
    changedFields: Object.keys(fields),
  };
}

describe('LiveQueryCache', () => {
  it('shows a snapshot only once its last chunk is in', () => {
    const cache = new LiveQueryCache();
    const first = cache.applyInitialChunk({
      documents: [{ id: 'a' }, { id: 'b' }],
      chunkIndex: 0,
      totalChunks: 2,
      isLast: false,
      seq: '10',
    });
    expect(first).toBe(false);
    expect(cache.ready).toBe(false);
    expect(cache.documents()).toEqual([]);

    const last = cache.applyInitialChunk({
      documents: [{ id: 'c' }],
      chunkIndex: 1,
      totalChunks: 2,
      isLast: true,
      seq: '10',
    });
    expect(last).toBe(true);
    expect(cache.ready).toBe(true);
    expect(cache.documents().map((d) => d.id)).toEqual(['a', 'b', 'c']);
    expect(cache.lastSeq).toBe('10');
  });

  it('accepts an empty single chunk as an empty, ready result', () => {
    const cache = new LiveQueryCache();
    cache.applyInitialChunk({
      documents: [],
      chunkIndex: 0,
      totalChunks: 1,
      isLast: true,
      seq: '0',
    });
    expect(cache.ready).toBe(true);
    expect(cache.size).toBe(0);
  });

  it('applies added, modified and removed in order', () => {
    const cache = new LiveQueryCache();
    cache.loadSnapshot([{ id: 'a', title: 'A' }], '5');
    const applied = cache.applyChanges([
      change('6', 'added', 'b', { title: 'B' }),
      change('7', 'modified', 'a', { title: 'A2' }),
      change('8', 'removed', 'b'),
    ]);
    expect(applied.map((c) => c.seq)).toEqual(['6', '7', '8']);
    expect(cache.documents()).toEqual([{ id: 'a', title: 'A2' }]);
    expect(cache.lastSeq).toBe('8');
  });

  it('ignores changes at or below the last applied seq, so replays never double', () => {
    const cache = new LiveQueryCache();
    cache.loadSnapshot([], '100');
    expect(cache.applyChanges([change('100', 'added', 'x')])).toEqual([]);
    expect(cache.applyChanges([change('99', 'added', 'y')])).toEqual([]);
    cache.applyChanges([change('101', 'added', 'a', { n: 1 })]);
    // The same batch again (a resume that overlaps) changes nothing.
    expect(cache.applyChanges([change('101', 'added', 'a', { n: 1 })])).toEqual([]);
    expect(cache.documents()).toEqual([{ id: 'a', n: 1 }]);
  });

  it('compares seqs as numbers, not as strings', () => {
    const cache = new LiveQueryCache();
    cache.loadSnapshot([], '9');
    expect(cache.applyChanges([change('10', 'added', 'a')])).toHaveLength(1);
    // Beyond 2^53: still exact.
    cache.loadSnapshot([], '9007199254740993');
    expect(cache.applyChanges([change('9007199254740992', 'added', 'b')])).toEqual([]);
    expect(cache.applyChanges([change('9007199254740994', 'added', 'c')])).toHaveLength(1);
  });

  it('holds changes that arrive before the snapshot and keeps those after its seq', () => {
    const cache = new LiveQueryCache();
    expect(cache.applyChanges([change('4', 'added', 'old'), change('6', 'added', 'new')])).toEqual(
      [],
    );
    cache.applyInitialChunk({
      documents: [{ id: 'old' }],
      chunkIndex: 0,
      totalChunks: 1,
      isLast: true,
      seq: '5',
    });
    expect(cache.documents().map((d) => d.id)).toEqual(['old', 'new']);
    expect(cache.lastSeq).toBe('6');
  });

  it('starts over after a resync: reset, then a fresh snapshot replaces everything', () => {
    const cache = new LiveQueryCache();
    cache.loadSnapshot([{ id: 'a' }, { id: 'b' }], '10');
    cache.reset();
    expect(cache.ready).toBe(false);
    expect(cache.lastSeq).toBeNull();
    expect(cache.documents()).toEqual([]);
    cache.applyInitialChunk({
      documents: [{ id: 'c' }],
      chunkIndex: 0,
      totalChunks: 1,
      isLast: true,
      seq: '50',
    });
    expect(cache.documents()).toEqual([{ id: 'c' }]);
    expect(cache.applyChanges([change('40', 'added', 'stale')])).toEqual([]);
  });

  it('restarts a snapshot whose first chunk arrives again', () => {
    const cache = new LiveQueryCache();
    cache.applyInitialChunk({
      documents: [{ id: 'x' }],
      chunkIndex: 0,
      totalChunks: 2,
      isLast: false,
      seq: '1',
    });
    cache.applyInitialChunk({
      documents: [{ id: 'y' }],
      chunkIndex: 0,
      totalChunks: 1,
      isLast: true,
      seq: '2',
    });
    expect(cache.documents()).toEqual([{ id: 'y' }]);
  });

  it('starts live and empty for a subscription without initial data', () => {
    const cache = new LiveQueryCache();
    cache.markReady('7');
    expect(cache.ready).toBe(true);
    expect(cache.applyChanges([change('7', 'added', 'a'), change('8', 'added', 'b')])).toHaveLength(
      1,
    );
  });

  it('write-through never rolls a document back to an older version', () => {
    const cache = new LiveQueryCache();
    cache.loadSnapshot([{ id: 'a', version: 1 }], '1');
    expect(cache.writeThrough({ id: 'a', version: 3, title: 'mine' })).toBe(true);
    // A late change carrying version 2 advances the seq but keeps the newer document.
    cache.applyChanges([change('2', 'modified', 'a', { version: 2, title: 'theirs' })]);
    expect(cache.get('a')).toEqual({ id: 'a', version: 3, title: 'mine' });
    expect(cache.lastSeq).toBe('2');
    expect(cache.writeThrough({ id: 'zzz', version: 1 })).toBe(false);
    expect(cache.writeThrough({ id: 'zzz', version: 1 }, true)).toBe(true);
  });
});
