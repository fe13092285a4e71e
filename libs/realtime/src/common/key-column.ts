import type {
  DataSource,
  DataSourceOptions,
  EntitySchemaColumnOptions,
  EntityTarget,
  ObjectLiteral,
} from 'typeorm';

/**
 * The width of the library's generated keys (the change log's `seq`, the audit log's `id`):
 * `bigint` on PostgreSQL, where `integer` is 32 bits and would run out after about two
 * billion rows; `integer` elsewhere, which is 64 bits on SQLite and the only type its
 * `AUTOINCREMENT` accepts.
 */
export type KeyType = 'integer' | 'bigint';

export function keyTypeOf(type: DataSourceOptions['type']): KeyType {
  return type === 'postgres' ? 'bigint' : 'integer';
}

/**
 * A generated key column of that width. node-postgres reads a `bigint` as a string; the
 * transformer makes it a number again (exact up to 2^53, some 285 years at a million rows a
 * second), so the entity has the same shape on every driver.
 */
export function keyColumn(type: KeyType): EntitySchemaColumnOptions {
  return {
    type,
    primary: true,
    generated: 'increment',
    ...(type === 'bigint' ? { transformer: { to: (v: unknown) => v, from: toNumber } } : {}),
  };
}

function toNumber(v: unknown): unknown {
  return typeof v === 'string' ? Number(v) : v;
}

/**
 * The generated keys of these entities that are still 32-bit on PostgreSQL (a database made
 * before `realtimeEntities`, or registered with `REALTIME_ENTITIES`), as `table.column`;
 * empty elsewhere.
 */
export async function narrowKeys(
  dataSource: DataSource,
  targets: EntityTarget<ObjectLiteral>[],
): Promise<string[]> {
  if (dataSource.options.type !== 'postgres') return [];
  const narrow: string[] = [];
  for (const target of targets) {
    const { schema, tableName, primaryColumns } = dataSource.getMetadata(target);
    const column = primaryColumns[0].databaseName;
    const rows = (await dataSource.query(
      `SELECT data_type FROM information_schema.columns WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2 AND column_name = $3`,
      [schema ?? null, tableName, column],
    )) as { data_type: string }[];
    if (rows[0]?.data_type === 'integer') narrow.push(`${tableName}.${column}`);
  }
  return narrow;
}
