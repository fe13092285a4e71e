import type { Doc, FieldFilter, NormalizedQuery, QueryInput } from './types';

/**
 * Fills in the defaults PROTOCOL.md documents, so that `{collection:'tasks'}` and
 * `{collection:'tasks', database:'default'}` are one subscription.
 */
export function normalizeQuery(input: QueryInput): NormalizedQuery {
  if (!input || typeof input.collection !== 'string' || input.collection === '') {
    throw new TypeError('query.collection is required');
  }
  const filters = [...(input.filters ?? [])];
  // Filters are ANDed, so their order carries no meaning; sorting lets more queries share.
  filters.sort((a, b) => (canonicalJson(a) < canonicalJson(b) ? -1 : 1));
  const out: NormalizedQuery = {
    ...input,
    resourceType: input.resourceType ?? (input.documentId ? 'document' : 'collection'),
    database: input.database ?? 'default',
    filters,
    includeInitialData: input.includeInitialData ?? false,
    includeMetadata: input.includeMetadata ?? true,
  };
  for (const key of Object.keys(out) as (keyof NormalizedQuery)[]) {
    if (out[key] === undefined) delete out[key];
  }
  return out;
}

/** The identity of a query: equal keys share one cache and one server subscription. */
export function queryKey(query: NormalizedQuery): string {
  return canonicalJson(query);
}

/** JSON with object keys sorted at every level, so equal values give equal strings. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) sorted[k] = (v as Record<string, unknown>)[k];
      return sorted;
    }
    return v;
  });
}

/**
 * Best-effort client-side evaluation of a query against a document, used only to place
 * optimistic writes in the right result sets before the server confirms them.
 * Returns `undefined` when it cannot tell (user and custom filters depend on the server).
 */
export function matchesQuery(query: NormalizedQuery, doc: Doc): boolean | undefined {
  if (query.documentId !== undefined && doc.id !== query.documentId) return false;
  let unknown = false;
  for (const filter of query.filters) {
    if (filter.type !== 'field') {
      unknown = true;
      continue;
    }
    if (!matchField(filter, doc)) return false;
  }
  return unknown ? undefined : true;
}

function readPath(doc: Doc, path: string): unknown {
  let cur: unknown = doc;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function matchField(filter: FieldFilter, doc: Doc): boolean {
  const actual = readPath(doc, filter.field);
  const fold = (v: unknown): unknown =>
    typeof v === 'string' && !filter.caseSensitive ? v.toLowerCase() : v;
  const a = fold(actual);
  const v = fold(filter.value);
  const absent = actual === undefined || actual === null;
  if (absent) {
    if (filter.operator === 'exists') return filter.value === false;
    return filter.operator === 'ne' || filter.operator === 'nin';
  }
  switch (filter.operator) {
    case 'eq':
      return a === v;
    case 'ne':
      return a !== v;
    case 'gt':
      return (a as number) > (v as number);
    case 'gte':
      return (a as number) >= (v as number);
    case 'lt':
      return (a as number) < (v as number);
    case 'lte':
      return (a as number) <= (v as number);
    case 'in':
      return Array.isArray(filter.value) && filter.value.map(fold).includes(a);
    case 'nin':
      return Array.isArray(filter.value) && !filter.value.map(fold).includes(a);
    case 'contains':
      if (Array.isArray(actual)) return actual.map(fold).includes(v);
      return typeof a === 'string' && typeof v === 'string' && a.includes(v);
    case 'startsWith':
      return typeof a === 'string' && typeof v === 'string' && a.startsWith(v);
    case 'endsWith':
      return typeof a === 'string' && typeof v === 'string' && a.endsWith(v);
    case 'exists':
      return filter.value !== false;
    default: {
      const _exhaustive: never = filter.operator;
      return _exhaustive;
    }
  }
}
