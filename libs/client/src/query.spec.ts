import { matchesQuery, normalizeQuery, queryKey } from './query';

describe('normalizeQuery / queryKey', () => {
  it('gives equal keys to queries that differ only in defaults, key order or filter order', () => {
    const a = normalizeQuery({
      collection: 'tasks',
      filters: [
        { type: 'field', field: 'status', operator: 'eq', value: 'todo' },
        { type: 'field', field: 'priority', operator: 'gte', value: 3 },
      ],
    });
    const b = normalizeQuery({
      filters: [
        { value: 3, operator: 'gte', field: 'priority', type: 'field' },
        { type: 'field', field: 'status', operator: 'eq', value: 'todo' },
      ],
      database: 'default',
      includeMetadata: true,
      collection: 'tasks',
      resourceType: 'collection',
    });
    expect(queryKey(a)).toBe(queryKey(b));
    expect(queryKey(a)).not.toBe(queryKey(normalizeQuery({ collection: 'tasks' })));
  });

  it('makes a query with documentId a document query', () => {
    expect(normalizeQuery({ collection: 'tasks', documentId: 'x' }).resourceType).toBe('document');
  });
});

describe('matchesQuery', () => {
  const q = normalizeQuery({
    collection: 'tasks',
    filters: [
      { type: 'field', field: 'status', operator: 'in', value: ['TODO', 'doing'] },
      { type: 'field', field: 'priority', operator: 'gte', value: 3 },
    ],
  });
  it('evaluates field filters, case-insensitively by default', () => {
    expect(matchesQuery(q, { status: 'todo', priority: 3 })).toBe(true);
    expect(matchesQuery(q, { status: 'done', priority: 3 })).toBe(false);
    expect(matchesQuery(q, { status: 'todo', priority: 1 })).toBe(false);
  });
  it('cannot tell for user and custom filters', () => {
    const mine = normalizeQuery({
      collection: 'tasks',
      filters: [{ type: 'user', field: 'assigneeId' }],
    });
    expect(matchesQuery(mine, { assigneeId: 'x' })).toBeUndefined();
  });
});
