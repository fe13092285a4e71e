import type { Query } from '../realtime.types';
import { SubscriptionIndex } from './subscription-index';

interface Sub {
  readonly name: string;
  readonly query: Query;
}

function sub(name: string, collection: string, documentId?: string, database = 'default'): Sub {
  return {
    name,
    query: {
      resourceType: documentId === undefined ? 'collection' : 'document',
      database,
      collection,
      ...(documentId === undefined ? {} : { documentId }),
      filters: [],
      includeInitialData: false,
      includeMetadata: true,
      batchSize: 100,
      throttleMs: 0,
    },
  };
}

function candidates(
  index: SubscriptionIndex<Sub>,
  collection: string,
  documentId: string,
  database = 'default',
): string[] {
  const names: string[] = [];
  index.forEachCandidate(database, collection, documentId, (s) => names.push(s.name));
  return names;
}

/** The index's internal maps, to prove that nothing is left behind. */
function internals(index: SubscriptionIndex<Sub>) {
  return index['databases'];
}

describe('SubscriptionIndex', () => {
  it('visits the collection-wide subscriptions, then those of the document', () => {
    const index = new SubscriptionIndex<Sub>();
    for (const s of [
      sub('tasks', 'tasks'),
      sub('tasks-2', 'tasks'),
      sub('task-1', 'tasks', '1'),
      sub('task-1-again', 'tasks', '1'),
      sub('task-2', 'tasks', '2'),
      sub('projects', 'projects'),
      sub('project-1', 'projects', '1'),
      sub('other-db-tasks', 'tasks', undefined, 'archive'),
      sub('other-db-task-1', 'tasks', '1', 'archive'),
    ]) {
      index.add(s);
    }
    expect(candidates(index, 'tasks', '1')).toEqual(['tasks', 'tasks-2', 'task-1', 'task-1-again']);
    expect(candidates(index, 'tasks', '2')).toEqual(['tasks', 'tasks-2', 'task-2']);
    expect(candidates(index, 'tasks', '3')).toEqual(['tasks', 'tasks-2']);
    expect(candidates(index, 'projects', '1')).toEqual(['projects', 'project-1']);
    expect(candidates(index, 'tasks', '1', 'archive')).toEqual([
      'other-db-tasks',
      'other-db-task-1',
    ]);
    expect(candidates(index, 'users', '1')).toEqual([]);
    expect(candidates(index, 'tasks', '1', 'nope')).toEqual([]);
  });

  it('does not mistake a collection-wide subscription for one to a document', () => {
    const index = new SubscriptionIndex<Sub>();
    index.add(sub('task-1', 'tasks', '1'));
    expect(candidates(index, 'tasks', '2')).toEqual([]);
  });

  it('counts subscriptions, and adds or removes each one once', () => {
    const index = new SubscriptionIndex<Sub>();
    const a = sub('a', 'tasks');
    const b = sub('b', 'tasks', '1');
    expect(index.size).toBe(0);
    expect(index.add(a)).toBe(true);
    expect(index.add(b)).toBe(true);
    expect(index.add(a)).toBe(false);
    expect(index.add(b)).toBe(false);
    expect(index.size).toBe(2);
    expect(candidates(index, 'tasks', '1')).toEqual(['a', 'b']);
    expect(index.remove(a)).toBe(true);
    expect(index.remove(a)).toBe(false);
    expect(index.size).toBe(1);
    expect(candidates(index, 'tasks', '1')).toEqual(['b']);
    expect(index.remove(b)).toBe(true);
    expect(index.remove(sub('never-added', 'tasks', '1'))).toBe(false);
    expect(index.remove(sub('never-added', 'users'))).toBe(false);
    expect(index.size).toBe(0);
    expect(candidates(index, 'tasks', '1')).toEqual([]);
  });

  it('tells apart two subscriptions with equal queries', () => {
    const index = new SubscriptionIndex<Sub>();
    const first = sub('first', 'tasks', '1');
    const second = sub('second', 'tasks', '1');
    index.add(first);
    index.add(second);
    index.remove(first);
    expect(candidates(index, 'tasks', '1')).toEqual(['second']);
  });

  it('leaves no empty maps behind after many add / remove cycles', () => {
    const index = new SubscriptionIndex<Sub>();
    const keep = sub('keep', 'tasks', 'kept');
    index.add(keep);
    for (let round = 0; round < 50; round++) {
      const batch = Array.from({ length: 200 }, (_, i) =>
        i % 4 === 0
          ? sub(`c${i}`, `collection-${round}-${i}`)
          : sub(`d${i}`, i % 2 ? 'tasks' : 'projects', `doc-${round}-${i}`, `db-${i % 3}`),
      );
      batch.forEach((s) => index.add(s));
      expect(index.size).toBe(201);
      batch.reverse().forEach((s) => index.remove(s));
    }
    expect(index.size).toBe(1);
    const databases = internals(index);
    expect([...databases.keys()]).toEqual(['default']);
    const collections = databases.get('default');
    expect([...(collections?.keys() ?? [])]).toEqual(['tasks']);
    const tasks = collections?.get('tasks');
    expect(tasks?.collectionWide.size).toBe(0);
    expect([...(tasks?.byDocument.keys() ?? [])]).toEqual(['kept']);

    index.remove(keep);
    expect(internals(index).size).toBe(0);
  });

  it('keeps a collection entry while it still has collection-wide subscriptions', () => {
    const index = new SubscriptionIndex<Sub>();
    const wide = sub('wide', 'tasks');
    const one = sub('one', 'tasks', '1');
    index.add(wide);
    index.add(one);
    index.remove(one);
    expect(candidates(index, 'tasks', '1')).toEqual(['wide']);
    expect(internals(index).get('default')?.get('tasks')?.byDocument.size).toBe(0);
    index.remove(wide);
    expect(internals(index).size).toBe(0);
  });

  it('lets the visitor remove subscriptions while it runs', () => {
    const index = new SubscriptionIndex<Sub>();
    const subs = [
      sub('a', 'tasks'),
      sub('b', 'tasks'),
      sub('c', 'tasks', '1'),
      sub('d', 'tasks', '1'),
    ];
    subs.forEach((s) => index.add(s));
    const visited: string[] = [];
    index.forEachCandidate('default', 'tasks', '1', (s) => {
      visited.push(s.name);
      // Remove the visited one and one not visited yet.
      index.remove(s);
      if (s.name === 'a') index.remove(subs[3]);
    });
    expect(visited).toEqual(['a', 'b', 'c']);
    expect(index.size).toBe(0);
    expect(internals(index).size).toBe(0);
  });

  it('refuses a document subscription without documentId', () => {
    const index = new SubscriptionIndex<Sub>();
    const broken: Sub = {
      name: 'broken',
      query: { ...sub('x', 'tasks').query, resourceType: 'document' },
    };
    expect(() => index.add(broken)).toThrow('A document subscription needs a documentId');
    expect(index.size).toBe(0);
    expect(internals(index).size).toBe(0);
  });
});
