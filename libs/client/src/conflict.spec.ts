import { diff, fieldLevelMerge, resolveConflict, type MergeFunction } from './conflict';
import type { PendingWrite } from './types';

const base = { id: 't1', title: 'Write docs', status: 'todo', priority: 2, version: 3 };
const server = { ...base, priority: 5, version: 4 };

function update(patch: Record<string, unknown>): PendingWrite {
  return {
    opId: 'op1',
    tabId: 'tab',
    order: 1,
    createdAt: 1,
    collection: 'tasks',
    kind: 'update',
    documentId: 't1',
    data: patch,
    version: 3,
    base,
    attempts: 0,
  };
}

describe('resolveConflict', () => {
  it('server-wins drops the local change', () => {
    expect(resolveConflict(update({ status: 'done' }), server, 'server-wins')).toEqual({
      action: 'accept-server',
    });
  });

  it('client-wins sends the same patch again on the server’s version', () => {
    const resolution = resolveConflict(update({ status: 'done' }), server, 'client-wins');
    expect(resolution).toEqual({
      action: 'retry',
      write: expect.objectContaining({ data: { status: 'done' }, version: 4, base: server }),
    });
  });

  it('client-wins deletes anyway, on the server’s version', () => {
    const del = { ...update({}), kind: 'delete' as const, data: undefined };
    const resolution = resolveConflict(del, server, 'client-wins');
    expect(resolution).toEqual({
      action: 'retry',
      write: expect.objectContaining({ kind: 'delete', version: 4 }),
    });
  });

  it('a merge function gets base, local and server, and its result goes out as a patch', () => {
    const merge = jest.fn<ReturnType<MergeFunction>, Parameters<MergeFunction>>(
      (_b, local, srv) => ({ ...srv, status: local.status, title: `${srv.title}!` }),
    );
    const resolution = resolveConflict(update({ status: 'done' }), server, merge);
    expect(merge).toHaveBeenCalledWith(base, { ...base, status: 'done' }, server);
    expect(resolution).toEqual({
      action: 'retry',
      write: expect.objectContaining({
        data: { status: 'done', title: 'Write docs!' },
        version: 4,
      }),
    });
  });

  it('accepts { merge } objects as well as bare functions', () => {
    const resolution = resolveConflict(update({ status: 'done' }), server, {
      merge: (_b, local, srv) => ({ ...srv, status: local.status }),
    });
    expect(resolution).toMatchObject({ action: 'retry', write: { data: { status: 'done' } } });
  });

  it('a merge that lands on the server’s document sends nothing', () => {
    expect(resolveConflict(update({ status: 'done' }), server, (_b, _l, srv) => srv)).toEqual({
      action: 'accept-server',
    });
  });

  it('never sends server-managed fields back', () => {
    const resolution = resolveConflict(update({ status: 'done' }), server, (_b, local) => ({
      ...local,
      version: 99,
      updatedAt: 'x',
    }));
    expect(resolution).toMatchObject({
      action: 'retry',
      write: { data: { status: 'done', priority: 2 } },
    });
  });

  it('yields to the server when the document was deleted there, whatever the strategy', () => {
    for (const strategy of ['server-wins', 'client-wins', fieldLevelMerge] as const) {
      expect(resolveConflict(update({ status: 'done' }), null, strategy)).toEqual({
        action: 'accept-server',
      });
    }
  });

  it('a delete under a merge strategy keeps the server’s newer document', () => {
    const del = { ...update({}), kind: 'delete' as const, data: undefined };
    expect(resolveConflict(del, server, fieldLevelMerge)).toEqual({ action: 'accept-server' });
  });
});

describe('fieldLevelMerge', () => {
  it('keeps the client’s fields the server did not touch and the server’s otherwise', () => {
    const local = { ...base, status: 'done', priority: 1 };
    expect(fieldLevelMerge(base, local, server)).toEqual({
      ...server,
      status: 'done', // only the client changed it
      priority: 5, // both changed it: the server's value stays
    });
  });

  it('through resolveConflict: only the client-only change is re-sent', () => {
    const resolution = resolveConflict(
      update({ status: 'done', priority: 1 }),
      server,
      fieldLevelMerge,
    );
    expect(resolution).toMatchObject({
      action: 'retry',
      write: { data: { status: 'done' }, version: 4 },
    });
  });
});

describe('diff', () => {
  it('compares values structurally', () => {
    expect(diff({ tags: ['a'], n: 1 }, { tags: ['a'], n: 2 })).toEqual({ n: 2 });
  });
});
