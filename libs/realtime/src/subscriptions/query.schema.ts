import { z } from 'zod';
import type {
  CollectionSchema,
  ErrorDetail,
  FieldKind,
  FieldOperator,
  Query,
  QueryFilter,
} from '../realtime.types';

/** Configurable bounds of a query (PROTOCOL.md "Query", "Limits"). */
export interface QueryLimits {
  /** @default 20 */
  maxFilters: number;
  /** Values in one `in` / `nin` filter. @default 1000 */
  maxInValues: number;
  /** @default 1000 */
  maxBatchSize: number;
  /** @default 60000 */
  maxThrottleMs: number;
}

export const DEFAULT_QUERY_LIMITS: Readonly<QueryLimits> = Object.freeze({
  maxFilters: 20,
  maxInValues: 1000,
  maxBatchSize: 1000,
  maxThrottleMs: 60_000,
});

/** What the validator knows of the application. */
export interface QueryValidationContext {
  /** The registered collections of the `default` database, by name. */
  collections: ReadonlyMap<string, CollectionSchema>;
  /** Names of the registered custom filters. */
  customFilters: ReadonlySet<string>;
  limits: QueryLimits;
}

export type QueryValidationResult =
  { ok: true; query: Query } | { ok: false; details: ErrorDetail[] };

export const DEFAULT_DATABASE = 'default';
const DEFAULT_BATCH_SIZE = 100;

/** Keys that could reach `Object.prototype` when used to index an object. */
const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** Custom filter params deeper than this are refused (and never recursed into further). */
const MAX_PARAMS_DEPTH = 16;

const FILTER_TYPES = ['field', 'user', 'custom'] as const;
const RESOURCE_TYPES = ['collection', 'document'] as const;

const FIELD_OPERATORS = [
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
] as const satisfies readonly FieldOperator[];

const ALL_OPERATORS: ReadonlySet<FieldOperator> = new Set(FIELD_OPERATORS);
const ORDERED_OPERATORS: ReadonlySet<FieldOperator> = new Set([
  'eq',
  'ne',
  'gt',
  'gte',
  'lt',
  'lte',
  'in',
  'nin',
  'exists',
]);

/** Which operators make sense on a field of each kind; dotted paths below `json` are `json`. */
const OPERATORS_BY_KIND: Record<FieldKind, ReadonlySet<FieldOperator>> = {
  string: ALL_OPERATORS,
  date: ALL_OPERATORS,
  json: ALL_OPERATORS,
  number: ORDERED_OPERATORS,
  boolean: new Set(['eq', 'ne', 'in', 'nin', 'exists']),
  array: new Set(['contains', 'exists']),
};

/** The JSON type of a value compared with a field of a scalar kind (dates are ISO strings). */
const VALUE_TYPE_BY_KIND: Partial<Record<FieldKind, 'string' | 'number' | 'boolean'>> = {
  string: 'string',
  date: 'string',
  number: 'number',
  boolean: 'boolean',
};

const NULL_COMPARABLE: ReadonlySet<FieldOperator> = new Set(['eq', 'ne', 'in', 'nin']);
const USER_FIELD_KINDS: ReadonlySet<FieldKind> = new Set(['string', 'number', 'array', 'json']);

// ---------------------------------------------------------------------------------------
// Structure: zod schemas

const finiteNumber = z.number().finite();

/** A union whose error says what the value may be, instead of zod's "Invalid input". */
function valueOneOf(
  description: string,
  types: Readonly<[z.ZodTypeAny, z.ZodTypeAny, ...z.ZodTypeAny[]]>,
  subject = 'value',
) {
  return z.union(types, {
    errorMap: (_issue, ctx) => ({
      message:
        ctx.data === undefined ? `${subject} is required` : `${subject} must be ${description}`,
    }),
  });
}

const primitiveValue = valueOneOf('a string, a number, a boolean or null', [
  z.string(),
  finiteNumber,
  z.boolean(),
  z.null(),
]);

const fieldPathSchema = z.string().superRefine((path, ctx) => {
  if (path === '') {
    ctx.addIssue({ code: 'custom', message: 'a field path must not be empty' });
    return;
  }
  for (const segment of path.split('.')) {
    if (segment === '') {
      ctx.addIssue({ code: 'custom', message: `"${path}" has an empty path segment` });
      return;
    }
    if (FORBIDDEN_KEYS.has(segment)) {
      ctx.addIssue({ code: 'custom', message: `"${segment}" is not allowed in a field path` });
      return;
    }
  }
});

const paramsSchema = z
  .custom<Record<string, unknown>>(isRecord, { message: 'params must be an object' })
  .superRefine((params, ctx) => refuseForbiddenKeys(params, [], 1, ctx));

/** Walks the raw params: zod's record output silently drops a `__proto__` key. */
function refuseForbiddenKeys(
  value: unknown,
  path: (string | number)[],
  depth: number,
  ctx: z.RefinementCtx,
): void {
  if (typeof value !== 'object' || value === null) return;
  if (depth > MAX_PARAMS_DEPTH) {
    ctx.addIssue({ code: 'custom', path, message: `params nest deeper than ${MAX_PARAMS_DEPTH}` });
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => refuseForbiddenKeys(item, [...path, i], depth + 1, ctx));
    return;
  }
  for (const key of Object.keys(value)) {
    if (FORBIDDEN_KEYS.has(key)) {
      ctx.addIssue({ code: 'custom', path: [...path, key], message: `"${key}" is not allowed` });
    } else {
      refuseForbiddenKeys((value as Record<string, unknown>)[key], [...path, key], depth + 1, ctx);
    }
  }
}

const filterTypeSchema = z.object({ type: z.enum(FILTER_TYPES) }).passthrough();

const userFilterSchema = z.object({ type: z.literal('user'), field: fieldPathSchema }).strict();

const customFilterSchema = z
  .object({
    type: z.literal('custom'),
    name: z.string().min(1, 'name must not be empty'),
    params: paramsSchema.optional(),
  })
  .strict();

function fieldFilterSchema(operator: z.ZodTypeAny, value: z.ZodTypeAny) {
  return z
    .object({
      type: z.literal('field'),
      field: fieldPathSchema,
      operator,
      value,
      caseSensitive: z.boolean().optional(),
    })
    .strict();
}

function integerIn(name: string, min: number, max: number) {
  return z
    .number()
    .int(`${name} must be an integer`)
    .min(min, `${name} must be at least ${min}`)
    .max(max, `${name} must be at most ${max}`);
}

function buildSchemas(limits: QueryLimits) {
  const valueList = z
    .array(
      valueOneOf('a string, a number, a boolean or null', primitiveValue.options, 'each value'),
    )
    .max(limits.maxInValues, `at most ${limits.maxInValues} values are allowed`);
  const ordered = valueOneOf('a number or a string', [finiteNumber, z.string()]);
  const valueByOperator: Record<FieldOperator, z.ZodTypeAny> = {
    eq: primitiveValue,
    ne: primitiveValue,
    gt: ordered,
    gte: ordered,
    lt: ordered,
    lte: ordered,
    in: valueList,
    nin: valueList,
    contains: valueOneOf('a string, a number or a boolean', [
      z.string(),
      finiteNumber,
      z.boolean(),
    ]),
    startsWith: z.string(),
    endsWith: z.string(),
    exists: z.boolean(),
  };
  const fieldFilters = new Map<string, z.ZodTypeAny>(
    FIELD_OPERATORS.map((op) => [op, fieldFilterSchema(z.literal(op), valueByOperator[op])]),
  );
  // Without a valid operator the value cannot be judged; the operator error says why.
  const fieldFilterWithoutOperator = fieldFilterSchema(z.enum(FIELD_OPERATORS), z.unknown());

  const query = z
    .object({
      resourceType: z.enum(RESOURCE_TYPES).optional(),
      database: z.string().optional(),
      collection: z.string().min(1, 'collection must not be empty'),
      documentId: valueOneOf(
        'a string or an integer',
        [
          z.string().min(1, 'documentId must not be empty'),
          z.number().int().safe('documentId must be a safe integer'),
        ],
        'documentId',
      )
        .transform(String)
        .optional(),
      fieldPath: fieldPathSchema.optional(),
      filters: z
        .array(z.unknown())
        .max(limits.maxFilters, `at most ${limits.maxFilters} filters are allowed`)
        .optional(),
      includeInitialData: z.boolean().default(false),
      includeMetadata: z.boolean().default(true),
      batchSize: integerIn('batchSize', 1, limits.maxBatchSize).default(
        Math.min(DEFAULT_BATCH_SIZE, limits.maxBatchSize),
      ),
      throttleMs: integerIn('throttleMs', 0, limits.maxThrottleMs).default(0),
    })
    .strict();

  /** The schema for one filter, chosen by its `type` (and `operator`), so every error shows. */
  function filter(raw: unknown): z.ZodTypeAny {
    if (!isRecord(raw)) return filterTypeSchema;
    switch (raw.type) {
      case 'field':
        return (
          (typeof raw.operator === 'string' && fieldFilters.get(raw.operator)) ||
          fieldFilterWithoutOperator
        );
      case 'user':
        return userFilterSchema;
      case 'custom':
        return customFilterSchema;
      default:
        return filterTypeSchema;
    }
  }

  return { query, filter };
}

type Schemas = ReturnType<typeof buildSchemas>;
type ParsedQuery = z.output<Schemas['query']>;

const schemasByLimits = new Map<string, Schemas>();

function schemasFor(limits: QueryLimits): Schemas {
  const key = `${limits.maxFilters}/${limits.maxInValues}/${limits.maxBatchSize}/${limits.maxThrottleMs}`;
  let schemas = schemasByLimits.get(key);
  if (schemas === undefined) {
    schemas = buildSchemas(limits);
    schemasByLimits.set(key, schemas);
  }
  return schemas;
}

/**
 * Messages that name what is wrong, for the issues whose zod defaults do not. Passed to
 * `safeParse`, it takes precedence over messages set on a schema, so it rewrites only the
 * type and enum issues, which no schema here words itself.
 */
const errorMap: z.ZodErrorMap = (issue, ctx) => {
  const subject = subjectOf(issue.path);
  switch (issue.code) {
    case z.ZodIssueCode.invalid_type:
      return {
        message:
          issue.received === 'undefined'
            ? `${subject} is required`
            : `${subject} must be ${describeType(issue.expected)} (got ${issue.received})`,
      };
    case z.ZodIssueCode.invalid_enum_value:
      return {
        message: `${subject} must be one of ${issue.options.map((o) => JSON.stringify(o)).join(', ')}`,
      };
    default:
      return { message: ctx.defaultError };
  }
};

function subjectOf(path: (string | number)[]): string {
  const last = path[path.length - 1];
  if (last === undefined) return 'query';
  if (typeof last === 'number') return `item ${last} of ${String(path[path.length - 2])}`;
  return last;
}

function describeType(expected: string): string {
  if (expected.includes('|'))
    return `one of ${expected.replaceAll("'", '"').split(' | ').join(', ')}`;
  return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
}

function toDetails(issues: z.ZodIssue[], out: ErrorDetail[]): void {
  for (const issue of issues) {
    if (issue.code === z.ZodIssueCode.unrecognized_keys) {
      for (const key of issue.keys) {
        out.push({
          path: [...issue.path, key].join('.'),
          message: FORBIDDEN_KEYS.has(key) ? `"${key}" is not allowed` : `unknown key "${key}"`,
        });
      }
    } else {
      out.push({ path: issue.path.join('.'), message: issue.message });
    }
  }
}

// ---------------------------------------------------------------------------------------
// Meaning: checks against the registered collections, fields and custom filters

/**
 * Runs on the raw input, so that these errors show beside the structural ones; each check
 * looks only at values of the right type (a wrong type is already a structural error).
 */
function contextDetails(
  raw: Record<string, unknown>,
  ctx: QueryValidationContext,
  out: ErrorDetail[],
): void {
  if (raw.resourceType === 'document' && raw.documentId === undefined) {
    out.push({
      path: 'documentId',
      message: 'documentId is required when resourceType is "document"',
    });
  }
  if (raw.resourceType === 'collection' && raw.documentId !== undefined) {
    out.push({
      path: 'documentId',
      message: 'documentId is not allowed when resourceType is "collection"',
    });
  }

  const database = raw.database ?? DEFAULT_DATABASE;
  if (typeof database === 'string' && database !== DEFAULT_DATABASE) {
    out.push({ path: 'database', message: `unknown database "${database}"` });
  }
  let schema: CollectionSchema | undefined;
  if (
    database === DEFAULT_DATABASE &&
    typeof raw.collection === 'string' &&
    raw.collection !== ''
  ) {
    schema = ctx.collections.get(raw.collection);
    if (schema === undefined) {
      out.push({ path: 'collection', message: `unknown collection "${raw.collection}"` });
    }
  }

  if (schema !== undefined && typeof raw.fieldPath === 'string') {
    const field = resolveField(schema, raw.fieldPath);
    if (typeof field === 'string') out.push({ path: 'fieldPath', message: field });
  }
  if (Array.isArray(raw.filters)) {
    raw.filters.forEach((filter, i) => {
      if (isRecord(filter)) filterContextDetails(filter, `filters.${i}`, schema, ctx, out);
    });
  }
}

function filterContextDetails(
  filter: Record<string, unknown>,
  path: string,
  schema: CollectionSchema | undefined,
  ctx: QueryValidationContext,
  out: ErrorDetail[],
): void {
  if (filter.type === 'custom') {
    if (
      typeof filter.name === 'string' &&
      filter.name !== '' &&
      !ctx.customFilters.has(filter.name)
    ) {
      out.push({ path: `${path}.name`, message: `unknown custom filter "${filter.name}"` });
    }
    return;
  }
  if (schema === undefined || typeof filter.field !== 'string') return;
  const fieldName = filter.field;
  const field = resolveField(schema, fieldName);
  if (typeof field === 'string') {
    out.push({ path: `${path}.field`, message: field });
    return;
  }
  const kind = field.kind;

  if (filter.type === 'user') {
    if (!USER_FIELD_KINDS.has(kind)) {
      out.push({
        path: `${path}.field`,
        message: `a user filter needs a string, number or array field; "${fieldName}" is a ${kind} field`,
      });
    }
    return;
  }
  if (filter.type !== 'field' || !ALL_OPERATORS.has(filter.operator as FieldOperator)) return;
  const operator = filter.operator as FieldOperator;
  if (!OPERATORS_BY_KIND[kind].has(operator)) {
    out.push({
      path: `${path}.operator`,
      message: `"${operator}" does not apply to the ${kind} field "${fieldName}"`,
    });
    return;
  }

  const valueType = VALUE_TYPE_BY_KIND[kind];
  if (valueType === undefined || operator === 'exists') return;
  const nullable = NULL_COMPARABLE.has(operator);
  const fits = (value: unknown) => typeof value === valueType || (nullable && value === null);
  const message = `"${fieldName}" is a ${kind} field; compare it with a ${valueType}${nullable ? ' or null' : ''}`;
  const value = filter.value;
  if (operator === 'in' || operator === 'nin') {
    if (!Array.isArray(value)) return;
    value.forEach((item, j) => {
      if (!fits(item)) out.push({ path: `${path}.value.${j}`, message });
    });
  } else if (value !== undefined && !fits(value)) {
    out.push({ path: `${path}.value`, message });
  }
}

/**
 * The kind of a field path, or why it is not a field: the first segment must be a field of
 * the collection, and only a `json` field has nested paths.
 */
function resolveField(schema: CollectionSchema, path: string): { kind: FieldKind } | string {
  const dot = path.indexOf('.');
  const head = dot === -1 ? path : path.slice(0, dot);
  if (!Object.hasOwn(schema.fields, head)) {
    return `unknown field "${head}" in collection "${schema.name}"`;
  }
  const kind = schema.fields[head];
  if (dot === -1) return { kind };
  if (kind !== 'json') return `"${head}" is a ${kind} field; only json fields have nested paths`;
  return { kind: 'json' };
}

// ---------------------------------------------------------------------------------------
// Entry points

/**
 * Validates a client's query and returns it normalised: every default filled in and keys
 * in a fixed order (that of `Query`), so two equal queries serialise to the same JSON.
 * Every problem found is reported, each with the dotted path of the offending key.
 *
 * @example
 * const result = validateQuery(message.data.query, ctx);
 * if (!result.ok) throw new InvalidQueryException(result.details);
 */
export function validateQuery(input: unknown, ctx: QueryValidationContext): QueryValidationResult {
  if (!isRecord(input)) {
    return { ok: false, details: [{ path: '', message: 'query must be a JSON object' }] };
  }
  const schemas = schemasFor(ctx.limits);
  const details: ErrorDetail[] = [];

  const parsed = schemas.query.safeParse(input, { errorMap });
  if (!parsed.success) toDetails(parsed.error.issues, details);

  const filters: QueryFilter[] = [];
  if (Array.isArray(input.filters)) {
    input.filters.forEach((raw, i) => {
      const filter = schemas.filter(raw).safeParse(raw, { errorMap, path: ['filters', i] });
      if (filter.success) filters.push(normaliseFilter(filter.data as QueryFilter));
      else toDetails(filter.error.issues, details);
    });
  }

  const reported = new Set(details.map((detail) => detail.path));
  const meaning: ErrorDetail[] = [];
  contextDetails(input, ctx, meaning);
  for (const detail of meaning) {
    if (!reported.has(detail.path)) details.push(detail);
  }

  if (details.length > 0 || !parsed.success) return { ok: false, details };
  return { ok: true, query: normaliseQuery(parsed.data, filters) };
}

function normaliseQuery(parsed: ParsedQuery, filters: QueryFilter[]): Query {
  const { documentId, fieldPath } = parsed;
  return {
    resourceType: parsed.resourceType ?? (documentId === undefined ? 'collection' : 'document'),
    database: parsed.database ?? DEFAULT_DATABASE,
    collection: parsed.collection,
    ...(documentId === undefined ? {} : { documentId }),
    ...(fieldPath === undefined ? {} : { fieldPath }),
    filters,
    includeInitialData: parsed.includeInitialData,
    includeMetadata: parsed.includeMetadata,
    batchSize: parsed.batchSize,
    throttleMs: parsed.throttleMs,
  };
}

function normaliseFilter(filter: QueryFilter): QueryFilter {
  switch (filter.type) {
    case 'field':
      return {
        type: 'field',
        field: filter.field,
        operator: filter.operator,
        value: Array.isArray(filter.value) ? [...(filter.value as unknown[])] : filter.value,
        caseSensitive: filter.caseSensitive ?? false,
      };
    case 'user':
      return { type: 'user', field: filter.field };
    case 'custom':
      return {
        type: 'custom',
        name: filter.name,
        params: sortKeys(filter.params ?? {}) as Record<string, unknown>,
      };
    default: {
      const _exhaustive: never = filter;
      return _exhaustive;
    }
  }
}

/**
 * A canonical string for a validated query: two queries that select the same changes in
 * the same way get the same key. Filter order, duplicate filters, the order and duplicates
 * of `in` / `nin` values, and the key order of objects do not change it. String case does
 * (`eq "Open"` and `eq "open"` get different keys even when both are case-insensitive).
 */
export function queryKey(query: Query): string {
  const filters = new Map<string, QueryFilter>();
  for (const filter of query.filters) {
    const canonical = canonicalFilter(filter);
    filters.set(canonicalJson(canonical), canonical);
  }
  const sorted = [...filters.keys()].sort().map((key) => filters.get(key));
  return canonicalJson({ ...query, filters: sorted });
}

function canonicalFilter(filter: QueryFilter): QueryFilter {
  switch (filter.type) {
    case 'field': {
      const { value } = filter;
      const isList =
        (filter.operator === 'in' || filter.operator === 'nin') && Array.isArray(value);
      return {
        type: 'field',
        field: filter.field,
        operator: filter.operator,
        value: isList ? sortedUnique(value as unknown[]) : value,
        caseSensitive: filter.caseSensitive === true,
      };
    }
    case 'user':
      return { type: 'user', field: filter.field };
    case 'custom':
      return { type: 'custom', name: filter.name, params: filter.params ?? {} };
    default: {
      const _exhaustive: never = filter;
      return _exhaustive;
    }
  }
}

function sortedUnique(values: unknown[]): unknown[] {
  const byJson = new Map(values.map((value) => [canonicalJson(value), value]));
  return [...byJson.keys()].sort().map((key) => byJson.get(key));
}

/** JSON with the keys of every object sorted. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) {
    return `[${value.map((item) => (item === undefined ? 'null' : canonicalJson(item))).join(',')}]`;
  }
  if (isRecord(value)) {
    const members = Object.keys(value)
      .filter((key) => value[key] !== undefined)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalJson(value[key])}`);
    return `{${members.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** A copy with the keys of every object sorted (forbidden keys were refused before). */
function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (!isRecord(value)) return value;
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) sorted[key] = sortKeys(value[key]);
  return sorted;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
