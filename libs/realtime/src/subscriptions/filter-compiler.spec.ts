import type { Doc, FieldFilter, FieldOperator, QueryFilter } from '../realtime.types';
import { compileFilters, CustomFilterFn, touchesFieldPath } from './filter-compiler';

const USER = 'u-1';

function compile(filters: QueryFilter[], customFilters: Record<string, CustomFilterFn> = {}) {
  return compileFilters(filters, { userId: USER, customFilters });
}

function field(
  fieldName: string,
  operator: FieldOperator,
  value?: unknown,
  caseSensitive?: boolean,
): FieldFilter {
  return { type: 'field', field: fieldName, operator, value, caseSensitive };
}

/** Whether `{ [name]: docValue }` matches the filter, in both case modes when asked. */
function matches(
  operator: FieldOperator,
  value: unknown,
  docValue: unknown,
  caseSensitive = false,
) {
  const doc: Doc = docValue === undefined ? {} : { f: docValue };
  return compile([field('f', operator, value, caseSensitive)])(doc);
}

describe('compileFilters', () => {
  describe('eq / ne', () => {
    it.each`
      value      | docValue    | insensitive | sensitive
      ${'Open'}  | ${'open'}   | ${true}     | ${false}
      ${'open'}  | ${'OPEN'}   | ${true}     | ${false}
      ${'open'}  | ${'open'}   | ${true}     | ${true}
      ${'open'}  | ${'opened'} | ${false}    | ${false}
      ${'École'} | ${'éCOLE'}  | ${true}     | ${false}
      ${3}       | ${3}        | ${true}     | ${true}
      ${3}       | ${'3'}      | ${false}    | ${false}
      ${'3'}     | ${3}        | ${false}    | ${false}
      ${true}    | ${true}     | ${true}     | ${true}
      ${true}    | ${'true'}   | ${false}    | ${false}
      ${null}    | ${null}     | ${true}     | ${true}
      ${null}    | ${'x'}      | ${false}    | ${false}
      ${'x'}     | ${null}     | ${false}    | ${false}
      ${'a'}     | ${['a']}    | ${false}    | ${false}
      ${'a'}     | ${{ a: 1 }} | ${false}    | ${false}
    `('eq $value vs $docValue', ({ value, docValue, insensitive, sensitive }) => {
      expect(matches('eq', value, docValue)).toBe(insensitive);
      expect(matches('eq', value, docValue, true)).toBe(sensitive);
      expect(matches('ne', value, docValue)).toBe(!insensitive);
      expect(matches('ne', value, docValue, true)).toBe(!sensitive);
    });
  });

  describe('in / nin', () => {
    it.each`
      values                | docValue    | insensitive | sensitive
      ${['Open', 'Closed']} | ${'open'}   | ${true}     | ${false}
      ${['open', 'closed']} | ${'CLOSED'} | ${true}     | ${false}
      ${['open', 'closed']} | ${'closed'} | ${true}     | ${true}
      ${['open', 'closed']} | ${'draft'}  | ${false}    | ${false}
      ${['ÉCOLE']}          | ${'école'}  | ${true}     | ${false}
      ${[1, 2, 3]}          | ${2}        | ${true}     | ${true}
      ${[1, 2, 3]}          | ${'2'}      | ${false}    | ${false}
      ${['1', '2']}         | ${1}        | ${false}    | ${false}
      ${[true]}             | ${true}     | ${true}     | ${true}
      ${[null, 'x']}        | ${null}     | ${true}     | ${true}
      ${['x']}              | ${null}     | ${false}    | ${false}
      ${[]}                 | ${'x'}      | ${false}    | ${false}
      ${['a']}              | ${['a']}    | ${false}    | ${false}
    `('in $values vs $docValue', ({ values, docValue, insensitive, sensitive }) => {
      expect(matches('in', values, docValue)).toBe(insensitive);
      expect(matches('in', values, docValue, true)).toBe(sensitive);
      expect(matches('nin', values, docValue)).toBe(!insensitive);
      expect(matches('nin', values, docValue, true)).toBe(!sensitive);
    });
  });

  describe('gt / gte / lt / lte', () => {
    it.each`
      value   | docValue | gt       | gte      | lt       | lte
      ${3}    | ${5}     | ${true}  | ${true}  | ${false} | ${false}
      ${3}    | ${3}     | ${false} | ${true}  | ${false} | ${true}
      ${3}    | ${-1}    | ${false} | ${false} | ${true}  | ${true}
      ${3}    | ${2.5}   | ${false} | ${false} | ${true}  | ${true}
      ${10}   | ${9}     | ${false} | ${false} | ${true}  | ${true}
      ${3}    | ${'5'}   | ${false} | ${false} | ${false} | ${false}
      ${3}    | ${null}  | ${false} | ${false} | ${false} | ${false}
      ${3}    | ${true}  | ${false} | ${false} | ${false} | ${false}
      ${'b'}  | ${'c'}   | ${true}  | ${true}  | ${false} | ${false}
      ${'b'}  | ${'b'}   | ${false} | ${true}  | ${false} | ${true}
      ${'b'}  | ${'a'}   | ${false} | ${false} | ${true}  | ${true}
      ${'10'} | ${'9'}   | ${true}  | ${true}  | ${false} | ${false}
      ${'b'}  | ${5}     | ${false} | ${false} | ${false} | ${false}
    `('$docValue against $value', ({ value, docValue, gt, gte, lt, lte }) => {
      expect(matches('gt', value, docValue)).toBe(gt);
      expect(matches('gte', value, docValue)).toBe(gte);
      expect(matches('lt', value, docValue)).toBe(lt);
      expect(matches('lte', value, docValue)).toBe(lte);
    });

    it('compares strings case-insensitively unless caseSensitive', () => {
      // 'B' (66) sorts before 'a' (97) in code units, but after it case-insensitively.
      expect(matches('gt', 'a', 'B')).toBe(true);
      expect(matches('gt', 'a', 'B', true)).toBe(false);
      expect(matches('lt', 'B', 'a')).toBe(true);
      expect(matches('lt', 'B', 'a', true)).toBe(false);
      expect(matches('gte', 'ABC', 'abc')).toBe(true);
      expect(matches('lte', 'abc', 'ABC')).toBe(true);
      expect(matches('gte', 'abc', 'ABC', true)).toBe(false);
      expect(matches('gt', 'école', 'ÉCOLES')).toBe(true);
    });

    it('orders ISO dates lexically', () => {
      const may = '2024-05-01T00:00:00.000Z';
      expect(matches('gt', may, '2024-05-01T00:00:00.001Z')).toBe(true);
      expect(matches('gt', may, '2024-04-30T23:59:59.999Z')).toBe(false);
      expect(matches('lt', may, '2023-12-31T23:59:59.999Z')).toBe(true);
      expect(matches('gte', '2024-05-01', '2024-05-01T08:00:00.000Z')).toBe(true);
      expect(matches('lt', '2024-05-02', '2024-05-01T23:59:59.999Z')).toBe(true);
    });
  });

  describe('contains', () => {
    it.each`
      value       | docValue                 | insensitive | sensitive
      ${'Bug'}    | ${'a bug report'}        | ${true}     | ${false}
      ${'bug'}    | ${'A BUG REPORT'}        | ${true}     | ${false}
      ${'bug'}    | ${'a bug report'}        | ${true}     | ${true}
      ${'bugs'}   | ${'a bug report'}        | ${false}    | ${false}
      ${''}       | ${'anything'}            | ${true}     | ${true}
      ${'urgent'} | ${['Urgent', 'backend']} | ${true}     | ${false}
      ${'urgent'} | ${['urgent', 'backend']} | ${true}     | ${true}
      ${'urg'}    | ${['urgent']}            | ${false}    | ${false}
      ${'x'}      | ${[]}                    | ${false}    | ${false}
      ${3}        | ${[1, 2, 3]}             | ${true}     | ${true}
      ${3}        | ${['3']}                 | ${false}    | ${false}
      ${true}     | ${[false, true]}         | ${true}     | ${true}
      ${3}        | ${'123'}                 | ${false}    | ${false}
      ${'1'}      | ${123}                   | ${false}    | ${false}
      ${'a'}      | ${null}                  | ${false}    | ${false}
    `('$value in $docValue', ({ value, docValue, insensitive, sensitive }) => {
      expect(matches('contains', value, docValue)).toBe(insensitive);
      expect(matches('contains', value, docValue, true)).toBe(sensitive);
    });
  });

  describe('startsWith / endsWith', () => {
    it.each`
      operator        | value     | docValue         | insensitive | sensitive
      ${'startsWith'} | ${'Fix'}  | ${'fix: login'}  | ${true}     | ${false}
      ${'startsWith'} | ${'fix'}  | ${'FIX: login'}  | ${true}     | ${false}
      ${'startsWith'} | ${'fix'}  | ${'fix: login'}  | ${true}     | ${true}
      ${'startsWith'} | ${'fix'}  | ${'a fix'}       | ${false}    | ${false}
      ${'startsWith'} | ${'fix!'} | ${'fix'}         | ${false}    | ${false}
      ${'startsWith'} | ${'éc'}   | ${'École'}       | ${true}     | ${false}
      ${'startsWith'} | ${'1'}    | ${12}            | ${false}    | ${false}
      ${'endsWith'}   | ${'.PDF'} | ${'report.pdf'}  | ${true}     | ${false}
      ${'endsWith'}   | ${'.pdf'} | ${'REPORT.PDF'}  | ${true}     | ${false}
      ${'endsWith'}   | ${'.pdf'} | ${'report.pdf'}  | ${true}     | ${true}
      ${'endsWith'}   | ${'.pdf'} | ${'report.pdfx'} | ${false}    | ${false}
      ${'endsWith'}   | ${'LE'}   | ${'École'}       | ${true}     | ${false}
      ${'endsWith'}   | ${'2'}    | ${12}            | ${false}    | ${false}
      ${'endsWith'}   | ${'a'}    | ${['a']}         | ${false}    | ${false}
    `('$operator $value on $docValue', ({ operator, value, docValue, insensitive, sensitive }) => {
      expect(matches(operator, value, docValue)).toBe(insensitive);
      expect(matches(operator, value, docValue, true)).toBe(sensitive);
    });
  });

  describe('exists', () => {
    it.each`
      docValue     | present
      ${'x'}       | ${true}
      ${''}        | ${true}
      ${0}         | ${true}
      ${false}     | ${true}
      ${null}      | ${true}
      ${[]}        | ${true}
      ${undefined} | ${false}
    `('exists on $docValue', ({ docValue, present }) => {
      expect(matches('exists', true, docValue)).toBe(present);
      expect(matches('exists', false, docValue)).toBe(!present);
    });
  });

  describe('an absent field', () => {
    const cases: [FieldOperator, unknown, boolean][] = [
      ['eq', 'x', false],
      ['eq', null, false],
      ['ne', 'x', true],
      ['ne', null, true],
      ['gt', 1, false],
      ['gte', 1, false],
      ['lt', 1, false],
      ['lte', 'a', false],
      ['in', ['x', null], false],
      ['nin', ['x', null], true],
      ['contains', 'x', false],
      ['startsWith', '', false],
      ['endsWith', '', false],
      ['exists', true, false],
      ['exists', false, true],
    ];

    it.each(cases)('matches %s %p: %p', (operator, value, expected) => {
      expect(matches(operator, value, undefined)).toBe(expected);
      expect(matches(operator, value, undefined, true)).toBe(expected);
      // A dotted path that runs into nothing is absent too.
      const nested = compile([field('meta.missing.deeper', operator, value)]);
      expect(nested({ meta: { other: 1 } })).toBe(expected);
      expect(nested({ meta: null })).toBe(expected);
      expect(nested({ meta: 'a string' })).toBe(expected);
    });

    it('covers every operator', () => {
      const all: FieldOperator[] = [
        'eq',
        'ne',
        'gt',
        'gte',
        'lt',
        'lte',
        'in',
        'nin',
        'contains',
        'startsWith',
        'endsWith',
        'exists',
      ];
      expect(new Set(cases.map(([operator]) => operator))).toEqual(new Set(all));
    });
  });

  describe('dotted paths', () => {
    const doc: Doc = {
      meta: { owner: { name: 'Ada', teams: ['Core', 'infra'] }, score: 7, flag: null },
      items: [{ sku: 'A-1' }, { sku: 'B-2' }],
    };

    it('reads nested JSON values', () => {
      expect(compile([field('meta.owner.name', 'eq', 'ada')])(doc)).toBe(true);
      expect(compile([field('meta.owner.name', 'eq', 'ada', true)])(doc)).toBe(false);
      expect(compile([field('meta.score', 'gte', 7)])(doc)).toBe(true);
      expect(compile([field('meta.owner.teams', 'contains', 'core')])(doc)).toBe(true);
      expect(compile([field('meta.flag', 'eq', null)])(doc)).toBe(true);
      expect(compile([field('meta.flag', 'exists', true)])(doc)).toBe(true);
      expect(compile([field('meta.nope', 'exists', false)])(doc)).toBe(true);
    });

    it('indexes into arrays by position', () => {
      expect(compile([field('items.1.sku', 'eq', 'b-2')])(doc)).toBe(true);
      expect(compile([field('items.2.sku', 'exists', false)])(doc)).toBe(true);
    });

    it('never reads inherited properties', () => {
      expect(compile([field('constructor', 'exists', true)])({})).toBe(false);
      expect(compile([field('meta.toString', 'exists', true)])(doc)).toBe(false);
      expect(compile([field('meta.owner.hasOwnProperty', 'exists', false)])(doc)).toBe(true);
      expect(compile([field('items.map', 'exists', false)])(doc)).toBe(true);
    });

    it('reads an own "__proto__" key of a parsed document as data', () => {
      const parsed = JSON.parse('{"meta":{"__proto__":{"x":"y"}}}') as Doc;
      expect(compile([field('meta.__proto__.x', 'eq', 'y')])(parsed)).toBe(true);
      expect(compile([field('meta.__proto__.x', 'eq', 'y')])({ meta: {} })).toBe(false);
    });
  });

  describe('user filter', () => {
    const mine = compile([{ type: 'user', field: 'assigneeId' }]);
    const shared = compile([{ type: 'user', field: 'memberIds' }]);

    it('matches a field equal to the user id', () => {
      expect(mine({ assigneeId: USER })).toBe(true);
      expect(mine({ assigneeId: 'u-2' })).toBe(false);
      expect(mine({ assigneeId: 'U-1' })).toBe(false);
      expect(mine({ assigneeId: null })).toBe(false);
      expect(mine({})).toBe(false);
    });

    it('matches an array field that contains the user id', () => {
      expect(shared({ memberIds: ['u-0', USER] })).toBe(true);
      expect(shared({ memberIds: ['u-0', 'u-2'] })).toBe(false);
      expect(shared({ memberIds: [] })).toBe(false);
      expect(shared({ memberIds: 'u-0,u-1' })).toBe(false);
    });

    it('matches a numeric id column against a numeric user id', () => {
      const numeric = compileFilters([{ type: 'user', field: 'ownerId' }], {
        userId: '42',
        customFilters: {},
      });
      expect(numeric({ ownerId: 42 })).toBe(true);
      expect(numeric({ ownerId: [7, 42] })).toBe(true);
      expect(numeric({ ownerId: 420 })).toBe(false);
      expect(mine({ assigneeId: 1 })).toBe(false);
    });
  });

  describe('custom filter', () => {
    it('receives the document, its params and the subscriber', () => {
      const calls: unknown[][] = [];
      const minPriority: CustomFilterFn = (doc, params, ctx) => {
        calls.push([doc, params, ctx.userId, ctx.now instanceof Date]);
        return (doc.priority as number) >= (params.min as number);
      };
      const predicate = compile([{ type: 'custom', name: 'minPriority', params: { min: 3 } }], {
        minPriority,
      });
      expect(predicate({ priority: 4 })).toBe(true);
      expect(predicate({ priority: 2 })).toBe(false);
      expect(calls).toEqual([
        [{ priority: 4 }, { min: 3 }, USER, true],
        [{ priority: 2 }, { min: 3 }, USER, true],
      ]);
    });

    it('gets the time of the call as now', () => {
      jest.useFakeTimers({ now: new Date('2024-05-01T12:00:00.000Z') });
      try {
        const overdue: CustomFilterFn = (doc, _params, { now }) =>
          (doc.dueDate as string) < now.toISOString();
        const predicate = compile([{ type: 'custom', name: 'overdue' }], { overdue });
        expect(predicate({ dueDate: '2024-05-01T11:00:00.000Z' })).toBe(true);
        expect(predicate({ dueDate: '2024-05-01T13:00:00.000Z' })).toBe(false);
        jest.setSystemTime(new Date('2024-05-01T14:00:00.000Z'));
        expect(predicate({ dueDate: '2024-05-01T13:00:00.000Z' })).toBe(true);
      } finally {
        jest.useRealTimers();
      }
    });

    it('passes empty params when the filter has none', () => {
      const seen: Record<string, unknown>[] = [];
      const predicate = compile([{ type: 'custom', name: 'spy' }], {
        spy: (_doc, params) => {
          seen.push(params);
          return true;
        },
      });
      expect(predicate({})).toBe(true);
      expect(seen).toEqual([{}]);
    });

    it('refuses an unknown name, also one inherited from Object.prototype', () => {
      expect(() => compile([{ type: 'custom', name: 'nope' }])).toThrow(
        'Unknown custom filter "nope"',
      );
      expect(() => compile([{ type: 'custom', name: 'toString' }])).toThrow(
        'Unknown custom filter "toString"',
      );
    });

    it('lets an exception of the predicate reach the caller', () => {
      const predicate = compile([{ type: 'custom', name: 'boom' }], {
        boom: () => {
          throw new Error('boom');
        },
      });
      expect(() => predicate({})).toThrow('boom');
    });
  });

  describe('several filters', () => {
    it('match only when all do', () => {
      const predicate = compile(
        [
          field('status', 'in', ['open', 'review']),
          field('priority', 'gte', 3),
          { type: 'user', field: 'assigneeId' },
          { type: 'custom', name: 'even', params: {} },
        ],
        { even: (doc) => (doc.priority as number) % 2 === 0 },
      );
      const base = { status: 'Open', priority: 4, assigneeId: USER };
      expect(predicate(base)).toBe(true);
      expect(predicate({ ...base, status: 'done' })).toBe(false);
      expect(predicate({ ...base, priority: 2 })).toBe(false);
      expect(predicate({ ...base, priority: 5 })).toBe(false);
      expect(predicate({ ...base, assigneeId: 'u-2' })).toBe(false);
    });

    it('match everything when there are none', () => {
      expect(compile([])({})).toBe(true);
    });

    it('are compiled once: changing the filter objects afterwards changes nothing', () => {
      const filter = field('status', 'eq', 'open');
      const values = ['a', 'b'];
      const list = field('tag', 'in', values);
      const predicate = compile([filter, list]);
      filter.value = 'closed';
      filter.field = 'other';
      values.push('c');
      expect(predicate({ status: 'open', tag: 'b' })).toBe(true);
      expect(predicate({ status: 'open', tag: 'c' })).toBe(false);
    });
  });

  describe('refuses at compile time a filter that validation would have refused', () => {
    it.each`
      operator        | value
      ${'in'}         | ${'a'}
      ${'nin'}        | ${[{ a: 1 }]}
      ${'exists'}     | ${'yes'}
      ${'gt'}         | ${true}
      ${'lte'}        | ${null}
      ${'startsWith'} | ${1}
      ${'endsWith'}   | ${undefined}
      ${'eq'}         | ${{ a: 1 }}
      ${'contains'}   | ${[1]}
    `('$operator with $value', ({ operator, value }) => {
      expect(() => compile([field('f', operator, value)])).toThrow(TypeError);
    });

    it('an unknown operator', () => {
      expect(() => compile([field('f', 'like' as FieldOperator, 'x')])).toThrow(
        'Unknown operator "like"',
      );
    });
  });
});

describe('touchesFieldPath', () => {
  it('is true for every change when the subscription has no fieldPath', () => {
    expect(touchesFieldPath(undefined, 'update', ['title'])).toBe(true);
  });

  it('is true for inserts and deletes, which touch every path', () => {
    expect(touchesFieldPath('status', 'insert', [])).toBe(true);
    expect(touchesFieldPath('status', 'delete', ['title'])).toBe(true);
  });

  it.each`
    fieldPath       | changedFields               | touched
    ${'status'}     | ${['status']}               | ${true}
    ${'status'}     | ${['title', 'status']}      | ${true}
    ${'status'}     | ${['title']}                | ${false}
    ${'status'}     | ${['statusText']}           | ${false}
    ${'statusText'} | ${['status']}               | ${false}
    ${'meta.a'}     | ${['meta']}                 | ${true}
    ${'meta.a'}     | ${['meta.a']}               | ${true}
    ${'meta.a'}     | ${['meta.a.b']}             | ${true}
    ${'meta.a'}     | ${['meta.b']}               | ${false}
    ${'meta.a'}     | ${['meta.ab']}              | ${false}
    ${'meta.ab'}    | ${['meta.a']}               | ${false}
    ${'meta'}       | ${['meta.a.b']}             | ${true}
    ${'meta.a.b'}   | ${['meta']}                 | ${true}
    ${'meta.a.b'}   | ${['metadata', 'meta.a.c']} | ${false}
  `(
    'update of $changedFields touches $fieldPath: $touched',
    ({ fieldPath, changedFields, touched }) => {
      expect(touchesFieldPath(fieldPath, 'update', changedFields)).toBe(touched);
    },
  );

  it('treats an update without changedFields as touching everything', () => {
    expect(touchesFieldPath('status', 'update', [])).toBe(true);
  });
});
