import type { CollectionSchema, ErrorDetail, Query } from '../realtime.types';
import {
  DEFAULT_QUERY_LIMITS,
  QueryLimits,
  QueryValidationContext,
  queryKey,
  validateQuery,
} from './query.schema';

const tasks: CollectionSchema = {
  name: 'tasks',
  primaryKey: 'id',
  fields: {
    id: 'number',
    title: 'string',
    status: 'string',
    priority: 'number',
    done: 'boolean',
    dueDate: 'date',
    tags: 'array',
    meta: 'json',
    assigneeId: 'string',
    memberIds: 'array',
  },
};
const projects: CollectionSchema = {
  name: 'projects',
  primaryKey: 'id',
  fields: { id: 'string', name: 'string' },
};

function context(limits: Partial<QueryLimits> = {}): QueryValidationContext {
  return {
    collections: new Map([
      ['tasks', tasks],
      ['projects', projects],
    ]),
    customFilters: new Set(['overdue']),
    limits: { ...DEFAULT_QUERY_LIMITS, ...limits },
  };
}

function valid(input: unknown, limits?: Partial<QueryLimits>): Query {
  const result = validateQuery(input, context(limits));
  if (!result.ok) throw new Error(`expected a valid query, got ${JSON.stringify(result.details)}`);
  return result.query;
}

function details(input: unknown, limits?: Partial<QueryLimits>): ErrorDetail[] {
  const result = validateQuery(input, context(limits));
  if (result.ok) throw new Error(`expected an invalid query, got ${JSON.stringify(result.query)}`);
  for (const detail of result.details) {
    expect(typeof detail.message).toBe('string');
    expect(detail.message.length).toBeGreaterThan(0);
  }
  return result.details;
}

function paths(input: unknown, limits?: Partial<QueryLimits>): string[] {
  return details(input, limits).map((detail) => detail.path);
}

/** A query on tasks with the given filters. */
function withFilters(...filters: unknown[]) {
  return { collection: 'tasks', filters };
}

describe('validateQuery', () => {
  describe('defaults and normalisation', () => {
    it('fills every default, keys in the order of Query', () => {
      const query = valid({ collection: 'tasks' });
      expect(query).toEqual({
        resourceType: 'collection',
        database: 'default',
        collection: 'tasks',
        filters: [],
        includeInitialData: false,
        includeMetadata: true,
        batchSize: 100,
        throttleMs: 0,
      });
      expect(Object.keys(query)).toEqual([
        'resourceType',
        'database',
        'collection',
        'filters',
        'includeInitialData',
        'includeMetadata',
        'batchSize',
        'throttleMs',
      ]);
    });

    it('keeps the given values', () => {
      const query = valid({
        throttleMs: 500,
        batchSize: 10,
        includeMetadata: false,
        includeInitialData: true,
        fieldPath: 'meta.owner',
        documentId: '7',
        collection: 'tasks',
        database: 'default',
        resourceType: 'document',
      });
      expect(JSON.stringify(query)).toBe(
        '{"resourceType":"document","database":"default","collection":"tasks","documentId":"7",' +
          '"fieldPath":"meta.owner","filters":[],"includeInitialData":true,"includeMetadata":false,' +
          '"batchSize":10,"throttleMs":500}',
      );
    });

    it('defaults resourceType to document when documentId is given', () => {
      expect(valid({ collection: 'tasks', documentId: 'a1' })).toMatchObject({
        resourceType: 'document',
        documentId: 'a1',
      });
    });

    it('turns a numeric documentId into a string', () => {
      expect(valid({ collection: 'tasks', documentId: 42 }).documentId).toBe('42');
      expect(valid({ collection: 'tasks', documentId: 0 }).documentId).toBe('0');
    });

    it('fills the defaults of each filter, keys in a fixed order', () => {
      const query = valid(
        withFilters(
          { value: 3, operator: 'gte', field: 'priority', type: 'field' },
          { field: 'assigneeId', type: 'user' },
          { name: 'overdue', type: 'custom' },
          { type: 'custom', params: { z: 1, a: { y: 2, b: [{ d: 1, c: 2 }] } }, name: 'overdue' },
        ),
      );
      expect(JSON.stringify(query.filters)).toBe(
        JSON.stringify([
          { type: 'field', field: 'priority', operator: 'gte', value: 3, caseSensitive: false },
          { type: 'user', field: 'assigneeId' },
          { type: 'custom', name: 'overdue', params: {} },
          { type: 'custom', name: 'overdue', params: { a: { b: [{ c: 2, d: 1 }], y: 2 }, z: 1 } },
        ]),
      );
    });

    it('serialises two equal queries written differently to the same JSON', () => {
      const a = valid({
        collection: 'tasks',
        filters: [{ type: 'field', field: 'status', operator: 'eq', value: 'open' }],
        batchSize: 100,
      });
      const b = valid({
        throttleMs: 0,
        filters: [
          { value: 'open', operator: 'eq', field: 'status', type: 'field', caseSensitive: false },
        ],
        includeMetadata: true,
        database: 'default',
        resourceType: 'collection',
        collection: 'tasks',
      });
      expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    });

    it('returns a copy that later changes to the input do not reach', () => {
      const values = ['open'];
      const params = { days: 3 };
      const input = {
        collection: 'tasks',
        filters: [
          { type: 'field', field: 'status', operator: 'in', value: values },
          { type: 'custom', name: 'overdue', params },
        ],
      };
      const query = valid(input);
      values.push('closed');
      params.days = 9;
      input.filters.pop();
      expect(query.filters).toEqual([
        { type: 'field', field: 'status', operator: 'in', value: ['open'], caseSensitive: false },
        { type: 'custom', name: 'overdue', params: { days: 3 } },
      ]);
    });
  });

  describe('refuses input that is not an object', () => {
    it.each([null, undefined, 'tasks', 42, true, [], [{ collection: 'tasks' }]])('%p', (input) => {
      expect(details(input)).toEqual([{ path: '', message: 'query must be a JSON object' }]);
    });
  });

  describe('collection, database, resourceType, documentId', () => {
    it('requires collection', () => {
      expect(details({})).toEqual([{ path: 'collection', message: 'collection is required' }]);
      expect(paths({ collection: '' })).toEqual(['collection']);
    });

    it('refuses an unknown collection', () => {
      expect(details({ collection: 'users' })).toEqual([
        { path: 'collection', message: 'unknown collection "users"' },
      ]);
      expect(paths({ collection: '__proto__' })).toEqual(['collection']);
      expect(paths({ collection: 'toString' })).toEqual(['collection']);
    });

    it('accepts the default database by name', () => {
      expect(valid({ collection: 'tasks', database: 'default' }).database).toBe('default');
    });

    it('refuses any other database, and does not judge the collection then', () => {
      expect(details({ collection: 'tasks', database: 'analytics' })).toEqual([
        { path: 'database', message: 'unknown database "analytics"' },
      ]);
      expect(paths({ collection: 'nope', database: 'other' })).toEqual(['database']);
      expect(paths({ collection: 'tasks', database: '' })).toEqual(['database']);
    });

    it('refuses resourceType document without documentId', () => {
      expect(details({ collection: 'tasks', resourceType: 'document' })).toEqual([
        { path: 'documentId', message: 'documentId is required when resourceType is "document"' },
      ]);
    });

    it('refuses resourceType collection with a documentId', () => {
      expect(paths({ collection: 'tasks', resourceType: 'collection', documentId: '1' })).toEqual([
        'documentId',
      ]);
    });

    it('refuses an unknown resourceType', () => {
      expect(details({ collection: 'tasks', resourceType: 'table' })).toEqual([
        { path: 'resourceType', message: 'resourceType must be one of "collection", "document"' },
      ]);
    });

    it.each([1.5, -0.5, 2 ** 53, true, null, {}, [], ''])('refuses documentId %p', (documentId) => {
      expect(paths({ collection: 'tasks', documentId })).toEqual(['documentId']);
    });

    it('says why a documentId is refused', () => {
      expect(details({ collection: 'tasks', documentId: false })).toEqual([
        { path: 'documentId', message: 'documentId must be a string or an integer' },
      ]);
      expect(details({ collection: 'tasks', documentId: 1.5 })).toEqual([
        { path: 'documentId', message: 'documentId must be an integer (got float)' },
      ]);
      expect(details({ collection: 'tasks', documentId: 2 ** 53 })).toEqual([
        { path: 'documentId', message: 'documentId must be a safe integer' },
      ]);
      expect(details({ collection: 'tasks', documentId: '' })).toEqual([
        { path: 'documentId', message: 'documentId must not be empty' },
      ]);
    });
  });

  describe('wrong types', () => {
    it.each`
      key                     | value     | message
      ${'collection'}         | ${5}      | ${'collection must be a string (got number)'}
      ${'database'}           | ${false}  | ${'database must be a string (got boolean)'}
      ${'fieldPath'}          | ${['a']}  | ${'fieldPath must be a string (got array)'}
      ${'filters'}            | ${{}}     | ${'filters must be an array (got object)'}
      ${'includeInitialData'} | ${'true'} | ${'includeInitialData must be a boolean (got string)'}
      ${'includeMetadata'}    | ${1}      | ${'includeMetadata must be a boolean (got number)'}
      ${'batchSize'}          | ${'10'}   | ${'batchSize must be a number (got string)'}
      ${'throttleMs'}         | ${null}   | ${'throttleMs must be a number (got null)'}
      ${'documentId'}         | ${true}   | ${'documentId must be a string or an integer'}
    `('$key: $value', ({ key, value, message }) => {
      expect(details({ collection: 'tasks', [key]: value })).toEqual([{ path: key, message }]);
    });
  });

  describe('unknown keys', () => {
    it('names an unknown key at the top level', () => {
      expect(details({ collection: 'tasks', colection: 'x' })).toEqual([
        { path: 'colection', message: 'unknown key "colection"' },
      ]);
    });

    it('names an unknown key inside a filter', () => {
      expect(
        details(withFilters({ type: 'field', field: 'status', operator: 'eq', value: 'x', op: 1 })),
      ).toEqual([{ path: 'filters.0.op', message: 'unknown key "op"' }]);
      expect(paths(withFilters({ type: 'user', field: 'assigneeId', value: 1 }))).toEqual([
        'filters.0.value',
      ]);
      expect(paths(withFilters({ type: 'custom', name: 'overdue', args: {} }))).toEqual([
        'filters.0.args',
      ]);
    });

    it('names each of several unknown keys', () => {
      expect(paths({ collection: 'tasks', a: 1, b: 2 })).toEqual(['a', 'b']);
    });
  });

  describe('__proto__, constructor, prototype', () => {
    it('refuses a JSON-parsed "__proto__" key at the top level', () => {
      const input: unknown = JSON.parse('{"collection":"tasks","__proto__":{"admin":true}}');
      expect(details(input)).toEqual([
        { path: '__proto__', message: '"__proto__" is not allowed' },
      ]);
    });

    it('refuses a JSON-parsed "__proto__" key inside a filter', () => {
      const input: unknown = JSON.parse(
        '{"collection":"tasks","filters":[{"type":"user","field":"assigneeId","__proto__":1}]}',
      );
      expect(paths(input)).toEqual(['filters.0.__proto__']);
    });

    it('refuses a JSON-parsed "__proto__" key in params, at any depth', () => {
      const top: unknown = JSON.parse(
        '{"collection":"tasks","filters":[{"type":"custom","name":"overdue","params":{"__proto__":1}}]}',
      );
      expect(details(top)).toEqual([
        { path: 'filters.0.params.__proto__', message: '"__proto__" is not allowed' },
      ]);
      const deep: unknown = JSON.parse(
        '{"collection":"tasks","filters":[{"type":"custom","name":"overdue",' +
          '"params":{"a":[{"constructor":{"prototype":1}}]}}]}',
      );
      expect(paths(deep)).toEqual(['filters.0.params.a.0.constructor']);
    });

    it.each(['__proto__', 'constructor', 'prototype'])('refuses %s as a path segment', (name) => {
      const message = `"${name}" is not allowed in a field path`;
      expect(details({ collection: 'tasks', fieldPath: name })).toEqual([
        { path: 'fieldPath', message },
      ]);
      expect(details({ collection: 'tasks', fieldPath: `meta.${name}.x` })).toEqual([
        { path: 'fieldPath', message },
      ]);
      expect(
        details(
          withFilters({ type: 'field', field: `meta.${name}`, operator: 'exists', value: true }),
        ),
      ).toEqual([{ path: 'filters.0.field', message }]);
      expect(details(withFilters({ type: 'user', field: name }))).toEqual([
        { path: 'filters.0.field', message },
      ]);
    });

    it('refuses them also for an unknown collection', () => {
      expect(paths({ collection: 'nope', fieldPath: '__proto__' })).toEqual([
        'fieldPath',
        'collection',
      ]);
    });
  });

  describe('fields and paths', () => {
    it('accepts a top-level field and a dotted path below a json field', () => {
      expect(valid({ collection: 'tasks', fieldPath: 'status' }).fieldPath).toBe('status');
      expect(valid({ collection: 'tasks', fieldPath: 'meta.owner.name' }).fieldPath).toBe(
        'meta.owner.name',
      );
      valid(withFilters({ type: 'field', field: 'meta.score', operator: 'gt', value: 3 }));
    });

    it('refuses an unknown field', () => {
      expect(details({ collection: 'tasks', fieldPath: 'colour' })).toEqual([
        { path: 'fieldPath', message: 'unknown field "colour" in collection "tasks"' },
      ]);
      expect(
        details(withFilters({ type: 'field', field: 'colour', operator: 'eq', value: 'red' })),
      ).toEqual([
        { path: 'filters.0.field', message: 'unknown field "colour" in collection "tasks"' },
      ]);
      expect(paths(withFilters({ type: 'user', field: 'ownerId' }))).toEqual(['filters.0.field']);
    });

    it('does not take a property of Object.prototype for a field', () => {
      expect(details(withFilters({ type: 'user', field: 'toString' }))).toEqual([
        { path: 'filters.0.field', message: 'unknown field "toString" in collection "tasks"' },
      ]);
      expect(paths({ collection: 'tasks', fieldPath: 'hasOwnProperty' })).toEqual(['fieldPath']);
    });

    it('refuses a dotted path below a field that is not json', () => {
      expect(details({ collection: 'tasks', fieldPath: 'title.length' })).toEqual([
        {
          path: 'fieldPath',
          message: '"title" is a string field; only json fields have nested paths',
        },
      ]);
      expect(paths(withFilters({ type: 'user', field: 'memberIds.0' }))).toEqual([
        'filters.0.field',
      ]);
    });

    it.each(['', '.', 'meta.', '.meta', 'meta..x'])('refuses the malformed path %p', (path) => {
      expect(paths({ collection: 'tasks', fieldPath: path })).toEqual(['fieldPath']);
    });
  });

  describe('field filters', () => {
    const ok = (filter: Record<string, unknown>) =>
      valid(withFilters({ type: 'field', ...filter })).filters[0];
    const bad = (filter: Record<string, unknown>) =>
      details(withFilters({ type: 'field', ...filter }));

    it('accepts every operator with a value of the right type', () => {
      expect(ok({ field: 'status', operator: 'eq', value: 'open' })).toMatchObject({
        value: 'open',
      });
      expect(ok({ field: 'status', operator: 'ne', value: null })).toMatchObject({ value: null });
      expect(ok({ field: 'priority', operator: 'gt', value: 1 })).toMatchObject({ value: 1 });
      expect(ok({ field: 'priority', operator: 'gte', value: 1 })).toMatchObject({ value: 1 });
      expect(ok({ field: 'title', operator: 'lt', value: 'm' })).toMatchObject({ value: 'm' });
      expect(ok({ field: 'dueDate', operator: 'lte', value: '2024-05-01' })).toMatchObject({
        operator: 'lte',
      });
      expect(ok({ field: 'status', operator: 'in', value: ['a', null] })).toMatchObject({
        value: ['a', null],
      });
      expect(ok({ field: 'priority', operator: 'nin', value: [] })).toMatchObject({ value: [] });
      expect(ok({ field: 'title', operator: 'contains', value: 'bug' })).toMatchObject({
        value: 'bug',
      });
      expect(ok({ field: 'tags', operator: 'contains', value: 'x' })).toMatchObject({ value: 'x' });
      expect(ok({ field: 'title', operator: 'startsWith', value: '' })).toMatchObject({
        value: '',
      });
      expect(ok({ field: 'title', operator: 'endsWith', value: 'x' })).toMatchObject({
        value: 'x',
      });
      expect(ok({ field: 'tags', operator: 'exists', value: false })).toMatchObject({
        value: false,
      });
      expect(ok({ field: 'done', operator: 'eq', value: true, caseSensitive: true })).toMatchObject(
        {
          caseSensitive: true,
        },
      );
      expect(ok({ field: 'meta.x', operator: 'in', value: [1, 'a', true] })).toMatchObject({
        value: [1, 'a', true],
      });
    });

    it('refuses an unknown or missing operator', () => {
      const operators =
        '"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "startsWith", "endsWith", "exists"';
      expect(bad({ field: 'status', operator: 'like', value: 'x' })).toEqual([
        { path: 'filters.0.operator', message: `operator must be one of ${operators}` },
      ]);
      expect(bad({ field: 'status', value: 'x' })).toEqual([
        { path: 'filters.0.operator', message: 'operator is required' },
      ]);
      expect(
        paths(withFilters({ type: 'field', field: 'status', operator: 3, value: 'x' })),
      ).toEqual(['filters.0.operator']);
      expect(paths(withFilters({ type: 'field', field: 'status', operator: '__proto__' }))).toEqual(
        ['filters.0.operator'],
      );
    });

    it('requires field', () => {
      expect(bad({ operator: 'eq', value: 'x' })).toEqual([
        { path: 'filters.0.field', message: 'field is required' },
      ]);
    });

    it.each`
      operator        | value        | message
      ${'eq'}         | ${undefined} | ${'value is required'}
      ${'eq'}         | ${{ a: 1 }}  | ${'value must be a string, a number, a boolean or null'}
      ${'ne'}         | ${['x']}     | ${'value must be a string, a number, a boolean or null'}
      ${'gt'}         | ${true}      | ${'value must be a number or a string'}
      ${'gte'}        | ${null}      | ${'value must be a number or a string'}
      ${'lt'}         | ${undefined} | ${'value is required'}
      ${'lte'}        | ${[1]}       | ${'value must be a number or a string'}
      ${'in'}         | ${'open'}    | ${'value must be an array (got string)'}
      ${'nin'}        | ${undefined} | ${'value is required'}
      ${'contains'}   | ${null}      | ${'value must be a string, a number or a boolean'}
      ${'startsWith'} | ${1}         | ${'value must be a string (got number)'}
      ${'endsWith'}   | ${undefined} | ${'value is required'}
      ${'exists'}     | ${'yes'}     | ${'value must be a boolean (got string)'}
      ${'exists'}     | ${undefined} | ${'value is required'}
    `('$operator refuses $value', ({ operator, value, message }) => {
      expect(bad({ field: 'meta.x', operator, value })).toEqual([
        { path: 'filters.0.value', message },
      ]);
    });

    it('names the bad element of an in / nin list', () => {
      expect(bad({ field: 'meta.x', operator: 'nin', value: ['a', { b: 1 }, 'c', [2]] })).toEqual([
        {
          path: 'filters.0.value.1',
          message: 'each value must be a string, a number, a boolean or null',
        },
        {
          path: 'filters.0.value.3',
          message: 'each value must be a string, a number, a boolean or null',
        },
      ]);
    });

    it('refuses a caseSensitive that is not a boolean', () => {
      expect(bad({ field: 'status', operator: 'eq', value: 'x', caseSensitive: 'yes' })).toEqual([
        {
          path: 'filters.0.caseSensitive',
          message: 'caseSensitive must be a boolean (got string)',
        },
      ]);
    });

    describe('against the kind of the field', () => {
      it('refuses an operator that does not apply', () => {
        expect(bad({ field: 'done', operator: 'gt', value: 1 })).toEqual([
          {
            path: 'filters.0.operator',
            message: '"gt" does not apply to the boolean field "done"',
          },
        ]);
        expect(
          paths(withFilters({ type: 'field', field: 'priority', operator: 'contains', value: 1 })),
        ).toEqual(['filters.0.operator']);
        expect(
          paths(withFilters({ type: 'field', field: 'tags', operator: 'eq', value: 'a' })),
        ).toEqual(['filters.0.operator']);
        expect(
          paths(withFilters({ type: 'field', field: 'done', operator: 'startsWith', value: 't' })),
        ).toEqual(['filters.0.operator']);
      });

      it('refuses a value of another type', () => {
        expect(bad({ field: 'priority', operator: 'eq', value: 'high' })).toEqual([
          {
            path: 'filters.0.value',
            message: '"priority" is a number field; compare it with a number or null',
          },
        ]);
        expect(bad({ field: 'priority', operator: 'gte', value: '3' })).toEqual([
          {
            path: 'filters.0.value',
            message: '"priority" is a number field; compare it with a number',
          },
        ]);
        expect(
          paths(withFilters({ type: 'field', field: 'done', operator: 'eq', value: 'true' })),
        ).toEqual(['filters.0.value']);
        expect(
          paths(withFilters({ type: 'field', field: 'title', operator: 'contains', value: 3 })),
        ).toEqual(['filters.0.value']);
        expect(
          paths(withFilters({ type: 'field', field: 'dueDate', operator: 'gt', value: 0 })),
        ).toEqual(['filters.0.value']);
        expect(
          paths(
            withFilters({
              type: 'field',
              field: 'priority',
              operator: 'in',
              value: [1, '2', null, 'x'],
            }),
          ),
        ).toEqual(['filters.0.value.1', 'filters.0.value.3']);
      });

      it('reports a structural error on the value only once', () => {
        expect(bad({ field: 'priority', operator: 'gt', value: true })).toEqual([
          { path: 'filters.0.value', message: 'value must be a number or a string' },
        ]);
      });
    });
  });

  describe('user and custom filters', () => {
    it('requires the field of a user filter', () => {
      expect(details(withFilters({ type: 'user' }))).toEqual([
        { path: 'filters.0.field', message: 'field is required' },
      ]);
    });

    it('refuses a user filter on a boolean or date field', () => {
      expect(details(withFilters({ type: 'user', field: 'done' }))).toEqual([
        {
          path: 'filters.0.field',
          message: 'a user filter needs a string, number or array field; "done" is a boolean field',
        },
      ]);
      expect(paths(withFilters({ type: 'user', field: 'dueDate' }))).toEqual(['filters.0.field']);
    });

    it('accepts a user filter on an array field', () => {
      expect(valid(withFilters({ type: 'user', field: 'memberIds' })).filters).toEqual([
        { type: 'user', field: 'memberIds' },
      ]);
    });

    it('refuses an unknown custom filter name', () => {
      expect(details(withFilters({ type: 'custom', name: 'archived' }))).toEqual([
        { path: 'filters.0.name', message: 'unknown custom filter "archived"' },
      ]);
      expect(paths(withFilters({ type: 'custom', name: 'toString' }))).toEqual(['filters.0.name']);
      expect(paths(withFilters({ type: 'custom' }))).toEqual(['filters.0.name']);
      expect(paths(withFilters({ type: 'custom', name: '' }))).toEqual(['filters.0.name']);
    });

    it.each([[[1]], ['x'], [null], [3]])('refuses params %p', (params) => {
      expect(details(withFilters({ type: 'custom', name: 'overdue', params }))).toEqual([
        { path: 'filters.0.params', message: 'params must be an object' },
      ]);
    });

    it('refuses params nested too deeply', () => {
      let params: Record<string, unknown> = { leaf: 1 };
      for (let i = 0; i < 20; i++) params = { a: params };
      expect(paths(withFilters({ type: 'custom', name: 'overdue', params }))).toEqual([
        'filters.0.params.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a',
      ]);
    });

    it.each`
      filter      | message
      ${'status'} | ${'item 0 of filters must be an object (got string)'}
      ${null}     | ${'item 0 of filters must be an object (got null)'}
      ${[]}       | ${'item 0 of filters must be an object (got array)'}
    `('refuses the filter $filter', ({ filter, message }) => {
      expect(details(withFilters(filter))).toEqual([{ path: 'filters.0', message }]);
    });

    it('refuses a missing or unknown filter type, and nothing else of that filter', () => {
      expect(details(withFilters({ field: 'status' }))).toEqual([
        { path: 'filters.0.type', message: 'type is required' },
      ]);
      expect(details(withFilters({ type: 'sql', where: '1=1' }))).toEqual([
        { path: 'filters.0.type', message: 'type must be one of "field", "user", "custom"' },
      ]);
    });
  });

  describe('limits', () => {
    const filter = { type: 'field', field: 'priority', operator: 'gt', value: 1 };

    it('accepts maxFilters filters and refuses one more', () => {
      valid(withFilters(...Array.from({ length: 20 }, () => filter)));
      expect(details(withFilters(...Array.from({ length: 21 }, () => filter)))).toEqual([
        { path: 'filters', message: 'at most 20 filters are allowed' },
      ]);
      expect(paths(withFilters(filter, filter, filter), { maxFilters: 2 })).toEqual(['filters']);
    });

    it('accepts maxInValues values and refuses one more', () => {
      const values = Array.from({ length: 1000 }, (_, i) => i);
      valid(withFilters({ type: 'field', field: 'priority', operator: 'in', value: values }));
      expect(
        details(
          withFilters({
            type: 'field',
            field: 'priority',
            operator: 'nin',
            value: [...values, 1000],
          }),
        ),
      ).toEqual([{ path: 'filters.0.value', message: 'at most 1000 values are allowed' }]);
      expect(
        paths(withFilters({ type: 'field', field: 'priority', operator: 'in', value: [1, 2, 3] }), {
          maxInValues: 2,
        }),
      ).toEqual(['filters.0.value']);
    });

    it.each`
      batchSize | message
      ${0}      | ${'batchSize must be at least 1'}
      ${1001}   | ${'batchSize must be at most 1000'}
      ${2.5}    | ${'batchSize must be an integer'}
      ${-3}     | ${'batchSize must be at least 1'}
    `('refuses batchSize $batchSize', ({ batchSize, message }) => {
      expect(details({ collection: 'tasks', batchSize })).toEqual([{ path: 'batchSize', message }]);
    });

    it('accepts batchSize 1 and maxBatchSize', () => {
      expect(valid({ collection: 'tasks', batchSize: 1 }).batchSize).toBe(1);
      expect(valid({ collection: 'tasks', batchSize: 1000 }).batchSize).toBe(1000);
    });

    it.each`
      throttleMs | message
      ${-1}      | ${'throttleMs must be at least 0'}
      ${60001}   | ${'throttleMs must be at most 60000'}
      ${0.5}     | ${'throttleMs must be an integer'}
    `('refuses throttleMs $throttleMs', ({ throttleMs, message }) => {
      expect(details({ collection: 'tasks', throttleMs })).toEqual([
        { path: 'throttleMs', message },
      ]);
    });

    it('accepts throttleMs 0 and maxThrottleMs', () => {
      expect(valid({ collection: 'tasks', throttleMs: 60000 }).throttleMs).toBe(60000);
    });

    it('follows configured limits, and keeps the default batchSize within them', () => {
      expect(
        paths(
          { collection: 'tasks', batchSize: 51, throttleMs: 1001 },
          {
            maxBatchSize: 50,
            maxThrottleMs: 1000,
          },
        ),
      ).toEqual(['batchSize', 'throttleMs']);
      expect(valid({ collection: 'tasks' }, { maxBatchSize: 50 }).batchSize).toBe(50);
    });
  });

  it('returns all the errors at once', () => {
    const input: unknown = JSON.parse(
      JSON.stringify({
        collection: 'tasks',
        resourceType: 'document',
        batchSize: 0,
        throttleMs: 'fast',
        extra: true,
        fieldPath: 'colour',
        filters: [
          { type: 'field', field: 'priority', operator: 'like', value: 1 },
          { type: 'field', field: 'status', operator: 'in', value: 'open', caseSensitive: 1 },
          { type: 'user', field: 'nope' },
          { type: 'custom', name: 'archived', params: [] },
          { type: 'field', field: 'title', operator: 'eq', value: 'x' },
        ],
      }),
    );
    expect(paths(input).sort()).toEqual(
      [
        'batchSize',
        'throttleMs',
        'extra',
        'documentId',
        'fieldPath',
        'filters.0.operator',
        'filters.1.value',
        'filters.1.caseSensitive',
        'filters.2.field',
        'filters.3.name',
        'filters.3.params',
      ].sort(),
    );
  });
});

describe('queryKey', () => {
  const ctx = context();
  const key = (input: unknown) => {
    const result = validateQuery(input, ctx);
    if (!result.ok) throw new Error(JSON.stringify(result.details));
    return queryKey(result.query);
  };
  const status = { type: 'field', field: 'status', operator: 'in', value: ['open', 'review'] };
  const priority = { type: 'field', field: 'priority', operator: 'gte', value: 3 };
  const mine = { type: 'user', field: 'assigneeId' };

  it('does not depend on the order of filters', () => {
    expect(key(withFilters(status, priority, mine))).toBe(key(withFilters(mine, status, priority)));
    expect(key(withFilters(status, priority, mine))).toBe(key(withFilters(priority, mine, status)));
  });

  it('does not depend on the order of keys, in the query, its filters or params', () => {
    expect(
      key({
        collection: 'tasks',
        filters: [{ type: 'custom', name: 'overdue', params: { b: 1, a: { d: 1, c: 2 } } }],
      }),
    ).toBe(
      key({
        filters: [{ params: { a: { c: 2, d: 1 }, b: 1 }, name: 'overdue', type: 'custom' }],
        collection: 'tasks',
      }),
    );
  });

  it('does not depend on the order or repetition of in / nin values, nor on repeated filters', () => {
    expect(key(withFilters({ ...status, value: ['review', 'open', 'open'] }))).toBe(
      key(withFilters(status)),
    );
    expect(key(withFilters(status, status))).toBe(key(withFilters(status)));
  });

  it('fills defaults of a query built by hand the way validation does', () => {
    const validated = valid(withFilters({ type: 'custom', name: 'overdue' }, priority));
    const byHand: Query = {
      ...validated,
      filters: [
        { type: 'field', field: 'priority', operator: 'gte', value: 3 },
        { type: 'custom', name: 'overdue' },
      ],
    };
    expect(queryKey(byHand)).toBe(queryKey(validated));
  });

  it('differs when the query selects something else', () => {
    const base = key(withFilters(status, priority));
    expect(key(withFilters(status))).not.toBe(base);
    expect(key(withFilters(status, { ...priority, value: 4 }))).not.toBe(base);
    expect(key(withFilters(status, { ...priority, operator: 'gt' }))).not.toBe(base);
    expect(key(withFilters(status, { ...priority, value: '3', field: 'meta.p' }))).not.toBe(
      key(withFilters(status, { ...priority, field: 'meta.p' })),
    );
    expect(key(withFilters({ ...status, caseSensitive: true }, priority))).not.toBe(base);
    expect(key({ ...withFilters(status, priority), documentId: '1' })).not.toBe(base);
    expect(key({ ...withFilters(status, priority), fieldPath: 'status' })).not.toBe(base);
    expect(key({ ...withFilters(status, priority), batchSize: 5 })).not.toBe(base);
    expect(key({ ...withFilters(status, priority), collection: 'projects', filters: [] })).not.toBe(
      key({ collection: 'tasks' }),
    );
  });
});
