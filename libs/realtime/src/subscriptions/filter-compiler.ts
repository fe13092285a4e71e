import type { Doc, FieldFilter, FieldOperator, Operation, QueryFilter } from '../realtime.types';
import {
  compareStrings,
  foldCompare,
  foldEndsWith,
  foldEquals,
  foldIncludes,
  foldKey,
  foldStartsWith,
} from './case-fold';

/**
 * A predicate that the application registers by name and that subscribers use as a
 * `custom` filter. It must be synchronous and cheap: it runs for every change of the
 * collection, for every subscription that uses it.
 *
 * @example
 * const overdue: CustomFilterFn = (doc, _params, { now }) =>
 *   typeof doc.dueDate === 'string' && doc.dueDate < now.toISOString() && doc.status !== 'done';
 */
export type CustomFilterFn = (
  doc: Doc,
  params: Record<string, unknown>,
  ctx: { userId: string; now: Date },
) => boolean;

export type DocPredicate = (doc: Doc) => boolean;

export interface FilterCompileContext {
  /** The subscriber's user id, for `user` filters and custom filters. */
  userId: string;
  customFilters: Readonly<Record<string, CustomFilterFn>>;
}

/** Tests one field value; `undefined` means the field is absent. */
type ValueTest = (value: unknown) => boolean;
type Primitive = string | number | boolean | null;

const EMPTY_PARAMS: Record<string, unknown> = Object.freeze({});

const matchAll: DocPredicate = () => true;

/**
 * Compiles the filters of a subscription, once, into one predicate (all filters AND
 * together). The filters must have passed `validateQuery`; a filter that could not have is
 * refused with an exception.
 *
 * Matching rules (PROTOCOL.md "Query"):
 * - A field is absent when its value is `undefined` (the key is missing, or a dotted path
 *   runs into a missing or non-object value). An absent field matches only `ne`, `nin` and
 *   `exists: false`. `null` is a present value: `eq null`, `ne null`, `in [null]` and
 *   `exists: true` see it; ordering and string operators never match it.
 * - Strings compare case-insensitively unless `caseSensitive` is true, by
 *   `toLowerCase()` and UTF-16 code units (not locale collation).
 * - No type coercion: a number matches only a number, a string only a string. Ordering
 *   operators compare numbers numerically and strings lexically; date columns arrive as
 *   ISO-8601 strings, so `gt: '2024-05-01T00:00:00.000Z'` orders correctly as long as both
 *   sides use the same ISO form (UTC `Z`, as `Date#toISOString` writes).
 * - `contains` is a substring test on a string field and an element test on an array field.
 * - `user`: the field equals the subscriber's user id, or (array field) contains it. A
 *   number field matches a user id that is the same number written in decimal.
 * - A custom filter that throws is not caught here; the caller decides what a failing
 *   predicate means for its subscription. Its `ctx.now` is a new Date at each read.
 *
 * The predicate parses nothing and allocates nothing per call, except: a case-insensitive
 * comparison with a document string that holds non-ASCII characters (or, for `contains`, is
 * longer than 256) lower-cases it; a case-insensitive `in` / `nin` lower-cases a document
 * string with upper-case letters to look it up; and a custom filter may allocate.
 */
export function compileFilters(filters: QueryFilter[], ctx: FilterCompileContext): DocPredicate {
  const predicates = filters.map((filter) => compileFilter(filter, ctx));
  if (predicates.length === 0) return matchAll;
  if (predicates.length === 1) return predicates[0];
  return (doc) => {
    for (let i = 0; i < predicates.length; i++) {
      if (!predicates[i](doc)) return false;
    }
    return true;
  };
}

function compileFilter(filter: QueryFilter, ctx: FilterCompileContext): DocPredicate {
  switch (filter.type) {
    case 'field': {
      const read = compileReader(filter.field);
      const test = compileFieldTest(filter);
      return (doc) => test(read(doc));
    }
    case 'user': {
      const read = compileReader(filter.field);
      const test = userTest(ctx.userId);
      return (doc) => test(read(doc));
    }
    case 'custom': {
      if (!Object.hasOwn(ctx.customFilters, filter.name)) {
        throw new Error(`Unknown custom filter "${filter.name}"`);
      }
      const fn = ctx.customFilters[filter.name];
      const params = filter.params ?? EMPTY_PARAMS;
      const userId = ctx.userId;
      // One context object per subscription; `now` is read when the predicate asks for it.
      const fnCtx = Object.freeze({
        userId,
        get now(): Date {
          return new Date();
        },
      });
      return (doc) => !!fn(doc, params, fnCtx);
    }
    default: {
      const _exhaustive: never = filter;
      throw new Error(`Unknown filter type ${JSON.stringify(_exhaustive)}`);
    }
  }
}

/**
 * Reads a (dotted) field path from a document, own properties only, so that no path can
 * reach `Object.prototype` (`constructor`, `toString`, …).
 */
function compileReader(path: string): (doc: Doc) => unknown {
  const segments = path.split('.');
  if (segments.length === 1) {
    const key = segments[0];
    return (doc) => (Object.hasOwn(doc, key) ? doc[key] : undefined);
  }
  return (doc) => {
    let current: unknown = doc;
    for (let i = 0; i < segments.length; i++) {
      if (typeof current !== 'object' || current === null || !Object.hasOwn(current, segments[i])) {
        return undefined;
      }
      current = (current as Record<string, unknown>)[segments[i]];
    }
    return current;
  };
}

function compileFieldTest(filter: FieldFilter): ValueTest {
  const fold = filter.caseSensitive !== true;
  const operator: FieldOperator = filter.operator;
  const value = filter.value;
  switch (operator) {
    // The constants are never `undefined`, so an absent field fails eq / in and passes ne / nin.
    case 'eq':
      return equalsTest(primitive(value, operator), fold);
    case 'ne': {
      const equals = equalsTest(primitive(value, operator), fold);
      return (v) => !equals(v);
    }
    case 'in':
      return memberTest(primitives(value, operator), fold);
    case 'nin': {
      const member = memberTest(primitives(value, operator), fold);
      return (v) => !member(v);
    }
    case 'gt': {
      const compare = compareTest(ordered(value, operator), fold);
      return (v) => compare(v) > 0;
    }
    case 'gte': {
      const compare = compareTest(ordered(value, operator), fold);
      return (v) => compare(v) >= 0;
    }
    case 'lt': {
      const compare = compareTest(ordered(value, operator), fold);
      return (v) => compare(v) < 0;
    }
    case 'lte': {
      const compare = compareTest(ordered(value, operator), fold);
      return (v) => compare(v) <= 0;
    }
    case 'contains':
      return containsTest(primitive(value, operator), fold);
    case 'startsWith': {
      const prefix = text(value, operator);
      if (!fold) return (v) => typeof v === 'string' && v.startsWith(prefix);
      const lower = prefix.toLowerCase();
      return (v) => typeof v === 'string' && foldStartsWith(v, lower);
    }
    case 'endsWith': {
      const suffix = text(value, operator);
      if (!fold) return (v) => typeof v === 'string' && v.endsWith(suffix);
      const lower = suffix.toLowerCase();
      return (v) => typeof v === 'string' && foldEndsWith(v, lower);
    }
    case 'exists':
      if (typeof value !== 'boolean') throw invalidValue(operator, 'a boolean');
      return value ? (v) => v !== undefined : (v) => v === undefined;
    default: {
      const _exhaustive: never = operator;
      throw new Error(`Unknown operator ${JSON.stringify(_exhaustive)}`);
    }
  }
}

function equalsTest(constant: Primitive, fold: boolean): ValueTest {
  if (typeof constant === 'string' && fold) {
    const lower = constant.toLowerCase();
    return (v) => typeof v === 'string' && foldEquals(v, lower);
  }
  return (v) => v === constant;
}

function memberTest(constants: readonly Primitive[], fold: boolean): ValueTest {
  if (!fold) {
    const set = new Set<unknown>(constants);
    return (v) => set.has(v);
  }
  const set = new Set<unknown>(constants.map((c) => (typeof c === 'string' ? c.toLowerCase() : c)));
  // foldKey allocates only for a document string with upper-case or non-ASCII characters.
  return (v) => set.has(typeof v === 'string' ? foldKey(v) : v);
}

/** Returns the sign of `value` compared with the constant, or NaN when they do not compare. */
function compareTest(constant: string | number, fold: boolean): (v: unknown) => number {
  if (typeof constant === 'number') {
    return (v) =>
      typeof v !== 'number' ? NaN : v > constant ? 1 : v < constant ? -1 : v === constant ? 0 : NaN;
  }
  if (!fold) return (v) => (typeof v === 'string' ? compareStrings(v, constant) : NaN);
  const lower = constant.toLowerCase();
  return (v) => (typeof v === 'string' ? foldCompare(v, lower) : NaN);
}

function containsTest(constant: Primitive, fold: boolean): ValueTest {
  if (typeof constant === 'string' && fold) {
    const lower = constant.toLowerCase();
    return (v) => {
      if (typeof v === 'string') return foldIncludes(v, lower);
      if (!Array.isArray(v)) return false;
      for (let i = 0; i < v.length; i++) {
        const element: unknown = v[i];
        if (typeof element === 'string' && foldEquals(element, lower)) return true;
      }
      return false;
    };
  }
  if (typeof constant === 'string') {
    return (v) => (typeof v === 'string' || Array.isArray(v)) && v.includes(constant);
  }
  return (v) => Array.isArray(v) && v.includes(constant);
}

function userTest(userId: string): ValueTest {
  // A numeric id column holds 42 where the token says "42".
  const asNumber = Number(userId);
  const numericId = userId !== '' && String(asNumber) === userId ? asNumber : NaN;
  const isUser = (v: unknown) => v === userId || v === numericId;
  return (v) => {
    if (!Array.isArray(v)) return isUser(v);
    for (let i = 0; i < v.length; i++) {
      if (isUser(v[i])) return true;
    }
    return false;
  };
}

function isPrimitive(value: unknown): value is Primitive {
  return (
    value === null ||
    typeof value === 'string' ||
    typeof value === 'boolean' ||
    (typeof value === 'number' && Number.isFinite(value))
  );
}

function primitive(value: unknown, operator: FieldOperator): Primitive {
  if (!isPrimitive(value)) throw invalidValue(operator, 'a string, number, boolean or null');
  return value;
}

function primitives(value: unknown, operator: FieldOperator): readonly Primitive[] {
  if (!Array.isArray(value) || !value.every(isPrimitive)) {
    throw invalidValue(operator, 'an array of strings, numbers, booleans or nulls');
  }
  return value;
}

function ordered(value: unknown, operator: FieldOperator): string | number {
  if (typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value))) {
    return value;
  }
  throw invalidValue(operator, 'a number or a string');
}

function text(value: unknown, operator: FieldOperator): string {
  if (typeof value !== 'string') throw invalidValue(operator, 'a string');
  return value;
}

function invalidValue(operator: FieldOperator, expected: string): TypeError {
  return new TypeError(`The value of a "${operator}" filter must be ${expected}`);
}

/**
 * Whether a change can affect `fieldPath` (PROTOCOL.md: only changes that touch that path
 * are delivered). Inserts and deletes touch every path. An update touches `a.b` when it
 * changed `a.b`, something inside it (`a.b.c`), or something that contains it (`a`).
 * An update whose `changedFields` is empty is treated as "unknown" and touches every path:
 * a spurious delivery is cheaper for a client than a missed one.
 */
export function touchesFieldPath(
  fieldPath: string | undefined,
  operation: Operation,
  changedFields: string[],
): boolean {
  if (fieldPath === undefined || operation !== 'update' || changedFields.length === 0) return true;
  for (let i = 0; i < changedFields.length; i++) {
    const changed = changedFields[i];
    if (
      changed === fieldPath ||
      isPathPrefix(changed, fieldPath) ||
      isPathPrefix(fieldPath, changed)
    ) {
      return true;
    }
  }
  return false;
}

/** `prefix` is a whole-segment prefix of `path` (`a` of `a.b`, not of `ab`). */
function isPathPrefix(prefix: string, path: string): boolean {
  return (
    path.length > prefix.length &&
    path.charCodeAt(prefix.length) === 46 /* '.' */ &&
    path.startsWith(prefix)
  );
}
