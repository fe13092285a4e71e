import type { DataSource } from 'typeorm';

/** The part of a better-sqlite3 statement the library uses. */
export interface SqliteStatement {
  run(...params: unknown[]): { lastInsertRowid: number | bigint; changes: number };
  /** the rows of a statement that returns some (a SELECT, an UPDATE … RETURNING) */
  all(...params: unknown[]): Record<string, unknown>[];
}

/** The part of a better-sqlite3 database the library uses. */
export interface SqliteDatabase {
  prepare(sql: string): SqliteStatement;
  transaction<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void;
  pragma(sql: string, options?: { simple: boolean }): unknown;
}

/**
 * The better-sqlite3 connection of a data source (TypeORM's better-sqlite3 driver has
 * exactly one), or undefined for any other driver or before it connects.
 */
export function sqliteHandle(dataSource: DataSource): SqliteDatabase | undefined {
  if (dataSource.options.type !== 'better-sqlite3') return undefined;
  return (dataSource.driver as unknown as { databaseConnection?: SqliteDatabase })
    .databaseConnection;
}

/**
 * A statement prepared once on the data source's better-sqlite3 connection (again if the
 * data source was destroyed and initialized anew). Statements run on that connection take
 * part in whatever transaction is open on it, as TypeORM's own queries do, without
 * TypeORM's query path (a query string looked up per call, query events, logging).
 */
export class PreparedSqlite {
  private prepared?: { db: SqliteDatabase; statement: SqliteStatement };

  constructor(
    private readonly dataSource: DataSource,
    private readonly sql: string,
  ) {}

  /**
   * The statement and the connection it belongs to (for `transaction()`), or undefined
   * when the data source is not better-sqlite3.
   */
  get(): { db: SqliteDatabase; statement: SqliteStatement } | undefined {
    const db = sqliteHandle(this.dataSource);
    if (!db) return undefined;
    if (this.prepared?.db !== db) this.prepared = { db, statement: db.prepare(this.sql) };
    return this.prepared;
  }
}
