import { applyPendingWrites } from './optimistic';
import { normalizeQuery } from './query';
import type { PendingWrite } from './types';

describe('applyPendingWrites', () => {
  const q = normalizeQuery({
    collection: 'tasks',
    filters: [{ type: 'field', field: 'status', operator: 'eq', value: 'todo' }],
  });
  const confirmed = new Map([
    ['a', { id: 'a', status: 'todo', title: 'A' }],
    ['b', { id: 'b', status: 'todo', title: 'B' }],
  ]);
  const w = (over: Partial<PendingWrite>): PendingWrite => ({
    opId: Math.random().toString(),
    tabId: 't',
    order: 1,
    createdAt: 1,
    collection: 'tasks',
    kind: 'update',
    documentId: 'a',
    attempts: 0,
    ...over,
  });

  it('shows edits, creations and deletions on top of the confirmed documents', () => {
    const view = applyPendingWrites(
      confirmed,
      [
        w({ data: { title: 'A2' } }),
        w({ kind: 'create', documentId: 'local:1', data: { status: 'todo', title: 'C' } }),
        w({ kind: 'delete', documentId: 'b' }),
      ],
      q,
    );
    expect(view).toEqual([
      { id: 'a', status: 'todo', title: 'A2' },
      { id: 'local:1', status: 'todo', title: 'C' },
    ]);
    expect(confirmed.get('a')?.title).toBe('A');
  });

  it('moves a document out of a result set it no longer matches, and into one it now does', () => {
    expect(
      applyPendingWrites(confirmed, [w({ data: { status: 'done' } })], q).map((d) => d.id),
    ).toEqual(['b']);
    const done = normalizeQuery({
      collection: 'tasks',
      filters: [{ type: 'field', field: 'status', operator: 'eq', value: 'done' }],
    });
    const base = confirmed.get('a');
    expect(applyPendingWrites(new Map(), [w({ data: { status: 'done' }, base })], done)).toEqual([
      { id: 'a', status: 'done', title: 'A' },
    ]);
  });

  it('ignores writes to other collections', () => {
    expect(
      applyPendingWrites(confirmed, [w({ collection: 'projects', kind: 'delete' })], q),
    ).toHaveLength(2);
  });
});
