import { rebase } from './realtime-client';
import type { PendingWrite } from './types';

describe('rebase', () => {
  const first: PendingWrite = {
    opId: '1',
    tabId: 't',
    order: 1,
    createdAt: 1,
    collection: 'tasks',
    kind: 'update',
    documentId: 'a',
    data: { title: 'x' },
    version: 3,
    attempts: 0,
  };
  const second: PendingWrite = { ...first, opId: '2', order: 2, data: { status: 'done' } };

  it('moves a later edit of the same document onto the version the earlier one produced', () => {
    expect(rebase(second, first, { id: 'a', version: 4 })).toMatchObject({ version: 4 });
  });

  it('gives edits of a document created offline its real id', () => {
    const create: PendingWrite = {
      ...first,
      kind: 'create',
      documentId: 'local:x',
      version: undefined,
    };
    const edit: PendingWrite = { ...second, documentId: 'local:x', version: undefined };
    expect(rebase(edit, create, { id: 'real', version: 1 })).toMatchObject({
      documentId: 'real',
      version: 1,
    });
  });

  it('leaves unrelated writes alone', () => {
    expect(rebase({ ...second, documentId: 'b' }, first, { id: 'a', version: 4 })).toBeNull();
    expect(rebase({ ...second, version: 9 }, first, { id: 'a', version: 4 })).toBeNull();
  });
});
