import { Injectable } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { QueryFailedError } from 'typeorm';
import type { DataSource, EntityManager, EntityMetadata, EntityTarget, QueryRunner } from 'typeorm';
import type { ColumnMetadata } from 'typeorm/metadata/ColumnMetadata';
import { OrmUtils } from 'typeorm/util/OrmUtils';
import { PreparedSqlite, type SqliteStatement } from '../common/sqlite-handle';
import { ChangeCaptureSubscriber, sameValue } from './change-capture.subscriber';
import { CollectionRegistry } from './collection-registry';
import { readsPlainly, tableOf } from './plain-sql';
import { TransactionRunner } from './transaction-runner';

/** How EntityWriter reads and writes one entity with plain SQL (null: through the ORM). */
interface Plan {
  metadata: EntityMetadata;
  /** `SELECT <columns> FROM <table> WHERE <pk> = <p>` */
  select: string;
  /** the SELECT with `FOR UPDATE` (PostgreSQL) */
  selectLocked: string;
  /** UPDATEs by the set of columns they write (joined names) */
  updates: Map<string, string>;
  /** true when no other listener or subscriber observes this entity's updates */
  updatable: boolean;
}

/** Thrown by EntityWriter.update when the row is no longer the version that was loaded. */
export class StaleEntityError extends Error {}

/**
 * Reads and updates rows of plain entities with one SQL statement each, and captures the
 * update as `save()` would: the same change (before, after, changed fields, actor) reaches
 * the change log and the subscribers after commit.
 *
 * `save()` of a loaded entity costs three statements through TypeORM's query builders: it
 * loads the row again to diff against, writes it, and (SQLite) reads back the version and
 * update date. `update()` trusts the row loaded in the same transaction instead: one
 * `UPDATE … WHERE <pk> AND version = <loaded> RETURNING version, updated date`. The version
 * condition makes the before-image exact: the UPDATE writes only over the row that was
 * loaded (every captured write bumps the version), otherwise it writes nothing and throws
 * StaleEntityError.
 *
 * Entities it does not handle this way go through TypeORM as before (`findOne`, `save()`):
 * entities without a version column, with relations, embedded, virtual or computed
 * columns, soft delete, inheritance, entity listeners, or another subscriber that listens
 * to them; an entity not loaded whole (`select`); a change of a column that is not a
 * plain updatable one; a manager outside a transaction or of another data source; drivers
 * other than better-sqlite3 and PostgreSQL.
 */
@Injectable()
export class EntityWriter {
  private readonly plans = new Map<EntityMetadata, Plan | null>();
  /** better-sqlite3: the plans' statements, by SQL text */
  private readonly statements = new Map<string, PreparedSqlite>();

  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly registry: CollectionRegistry,
    private readonly capture: ChangeCaptureSubscriber,
    private readonly transactions: TransactionRunner,
  ) {}

  /**
   * The row with this primary key, as `manager.findOne(target, { where: { <pk>: id } })`
   * would load it, or null. `lock`: inside a transaction on PostgreSQL, the row stays
   * locked (`FOR UPDATE`) until the transaction ends, as with `lock: { mode:
   * 'pessimistic_write' }`; SQLite's writers take turns (TransactionRunner) and need none.
   */
  async findOne<T extends object>(
    manager: EntityManager,
    target: EntityTarget<T>,
    id: unknown,
    options: { lock?: boolean } = {},
  ): Promise<T | null> {
    const metadata = manager.connection.getMetadata(target);
    if (metadata.primaryColumns.length !== 1) {
      throw new Error(
        `EntityWriter.findOne takes one key value: ${metadata.name} has ${metadata.primaryColumns.length} primary columns (use manager.findOne)`,
      );
    }
    const plan = this.planOf(manager, metadata);
    const runner = manager.queryRunner;
    // SQLite's writers take turns (TransactionRunner): no lock there, as before
    const lock =
      options.lock === true && !this.transactions.isSerial && runner?.isTransactionActive === true;
    if (!plan) {
      const pk = metadata.primaryColumns[0].propertyName;
      return manager.findOne(target, {
        where: { [pk]: id } as never,
        lock: lock ? { mode: 'pessimistic_write' } : undefined,
      });
    }
    const [row] = await this.run(runner ?? null, lock ? plan.selectLocked : plan.select, [id]);
    return row
      ? (this.hydrate(metadata, row, metadata.create(runner, { fromDeserializer: true })) as T)
      : null;
  }

  /**
   * Writes `changes` over `entity`, a row loaded in this transaction (by findOne above or
   * any other way), and returns `entity` with them and with the new version and update
   * date, as `save()` does. Fields equal to the loaded ones are not written; when nothing
   * differs, nothing is written or captured, and no query runs (so the entity is not
   * checked against the row: it is returned as loaded). Throws StaleEntityError, writing nothing, if
   * the row's version is no longer the loaded one (another transaction changed it: load
   * it `{ lock: true }` to keep that from happening on PostgreSQL).
   */
  async update<T extends object>(
    manager: EntityManager,
    entity: T,
    changes: Partial<T>,
  ): Promise<T> {
    const metadata = manager.connection.getMetadata(entity.constructor);
    const plan = this.planOf(manager, metadata);
    const runner = manager.queryRunner;
    const columns =
      plan?.updatable && runner?.isTransactionActive && loadedWhole(metadata, entity)
        ? this.columnsOf(metadata, changes)
        : null;
    if (!plan || !runner || !columns) {
      Object.assign(entity, changes);
      return manager.save(entity);
    }
    const driver = this.dataSource.driver;
    const changed = columns.filter((column) => !this.same(column, changes, entity));
    // nothing to write: the entity as loaded, without a query (so without a version check)
    if (changed.length === 0) {
      for (const column of columns) column.setEntityValue(entity, column.getEntityValue(changes));
      return entity;
    }
    const version = metadata.versionColumn as ColumnMetadata;
    const primary = metadata.primaryColumns[0];
    const params = changed.map((column) =>
      persisted(driver.preparePersistentValue(column.getEntityValue(changes), column)),
    );
    params.push(primary.getEntityValue(entity), version.getEntityValue(entity));
    const [row] = await this.run(runner, this.updateSql(plan, changed), params);
    if (!row) {
      throw new StaleEntityError(
        `${metadata.name} ${String(primary.getEntityValue(entity))}: the row is no longer version ${String(version.getEntityValue(entity))} (changed or deleted since it was loaded); nothing was written`,
      );
    }
    const collection = this.registry.forMetadata(metadata);
    const before = collection ? this.registry.toDoc(collection, entity) : null;
    for (const column of columns) column.setEntityValue(entity, column.getEntityValue(changes));
    this.hydrate(metadata, row, entity, bookkeepingOf(metadata));
    if (collection && before) {
      await this.capture.captureUpdate(
        runner,
        collection,
        before,
        this.registry.toDoc(collection, entity),
      );
    }
    return entity;
  }

  /**
   * Does the change store what the entity holds? As TypeORM's save() decides: JSON columns
   * by deep comparison (PostgreSQL reorders jsonb keys), others in the form the driver
   * stores them (dates as the driver writes them, booleans as 0/1 on SQLite, …).
   */
  private same(column: ColumnMetadata, changes: object, entity: object): boolean {
    const next = column.getEntityValue(changes);
    const loaded = column.getEntityValue(entity);
    if (['json', 'jsonb', 'simple-json'].includes(String(column.type))) {
      return (
        next === loaded || (next != null && loaded != null && OrmUtils.deepCompare(next, loaded))
      );
    }
    const driver = this.dataSource.driver;
    return sameValue(
      driver.preparePersistentValue(next, column),
      driver.preparePersistentValue(loaded, column),
    );
  }

  /** The columns `changes` names, or null if one is not a plain updatable column. */
  private columnsOf(metadata: EntityMetadata, changes: object): ColumnMetadata[] | null {
    const columns: ColumnMetadata[] = [];
    for (const key of Object.keys(changes)) {
      if ((changes as Record<string, unknown>)[key] === undefined) continue;
      const column = metadata.findColumnWithPropertyName(key);
      if (
        !column ||
        !column.isUpdate ||
        column.isPrimary ||
        column.isGenerated ||
        column.isVersion ||
        column.isUpdateDate ||
        column.isCreateDate ||
        column.isDeleteDate
      ) {
        return null;
      }
      columns.push(column);
    }
    return columns;
  }

  private updateSql(plan: Plan, columns: ColumnMetadata[]): string {
    const key = columns.map((c) => c.databaseName).join('\0');
    let sql = plan.updates.get(key);
    if (sql) return sql;
    const { metadata } = plan;
    const driver = this.dataSource.driver;
    const p = (i: number) => driver.createParameter(`p${i}`, i);
    const version = driver.escape((metadata.versionColumn as ColumnMetadata).databaseName);
    const sets = columns.map((c, i) => `${driver.escape(c.databaseName)} = ${p(i)}`);
    sets.push(`${version} = ${version} + 1`);
    if (metadata.updateDateColumn) {
      sets.push(`${driver.escape(metadata.updateDateColumn.databaseName)} = CURRENT_TIMESTAMP`);
    }
    const n = columns.length;
    const returning = bookkeepingOf(metadata).map((c) => driver.escape(c.databaseName));
    sql = `UPDATE ${tableOf(metadata, driver)} SET ${sets.join(', ')} WHERE ${driver.escape(metadata.primaryColumns[0].databaseName)} = ${p(n)} AND ${version} = ${p(n + 1)} RETURNING ${returning.join(', ')}`;
    plan.updates.set(key, sql);
    return sql;
  }

  /** Sets the row's columns (or `only` these) on `entity`, converted as TypeORM loads them. */
  private hydrate(
    metadata: EntityMetadata,
    row: Record<string, unknown>,
    entity: object,
    only: ColumnMetadata[] = metadata.columns,
  ): object {
    const driver = this.dataSource.driver;
    for (const column of only) {
      column.setEntityValue(entity, driver.prepareHydratedValue(row[column.databaseName], column));
    }
    return entity;
  }

  /** Runs a statement that returns rows, on the transaction's connection. */
  private async run(
    runner: QueryRunner | null,
    sql: string,
    params: unknown[],
  ): Promise<Record<string, unknown>[]> {
    const statement = this.sqliteStatement(sql);
    if (statement) {
      try {
        return statement.all(...params);
      } catch (e) {
        // as TypeORM's own queries fail (a constraint, a missing table, …)
        throw new QueryFailedError(sql, params, e as Error);
      }
    }
    const result = (await (runner ?? this.dataSource.manager).query(sql, params)) as unknown;
    // PostgreSQL answers an UPDATE … RETURNING with [rows, count]
    if (Array.isArray(result) && Array.isArray(result[0]))
      return result[0] as Record<string, unknown>[];
    return result as Record<string, unknown>[];
  }

  /**
   * better-sqlite3: the statement prepared once on the connection (PreparedSqlite), run
   * without TypeORM's query path, in whatever transaction is open on it, as the change log
   * INSERT is. Undefined for any other driver.
   */
  private sqliteStatement(sql: string): SqliteStatement | undefined {
    if (this.dataSource.options.type !== 'better-sqlite3') return undefined;
    let prepared = this.statements.get(sql);
    if (!prepared) {
      prepared = new PreparedSqlite(this.dataSource, sql);
      this.statements.set(sql, prepared);
    }
    return prepared.get()?.statement;
  }

  /** The plan of an entity of this writer's data source (null: another data source's manager). */
  private planOf(manager: EntityManager, metadata: EntityMetadata): Plan | null {
    if (manager.connection !== this.dataSource) return null;
    let plan = this.plans.get(metadata);
    if (plan !== undefined) return plan;
    plan = this.makePlan(metadata);
    this.plans.set(metadata, plan);
    return plan;
  }

  private makePlan(metadata: EntityMetadata): Plan | null {
    const type = this.dataSource.options.type;
    const others = this.otherSubscribers(metadata);
    const plain =
      (type === 'better-sqlite3' || type === 'postgres') &&
      readsPlainly(metadata) &&
      metadata.tableType === 'regular' &&
      !metadata.discriminatorColumn &&
      metadata.childEntityMetadatas.length === 0 &&
      !metadata.treeType &&
      metadata.versionColumn !== undefined &&
      metadata.primaryColumns.length === 1 &&
      metadata.relations.length === 0 &&
      metadata.embeddeds.length === 0 &&
      metadata.afterLoadListeners.length === 0 &&
      !others.some((s) => typeof s.afterLoad === 'function');
    if (!plain) return null;
    const driver = this.dataSource.driver;
    const select = `SELECT ${metadata.columns.map((c) => driver.escape(c.databaseName)).join(', ')} FROM ${tableOf(metadata, driver)} WHERE ${driver.escape(metadata.primaryColumns[0].databaseName)} = ${driver.createParameter('id', 0)}`;
    const updatable =
      // columns the database computes: save() reads them back, this does not
      metadata.columns.every((c) => !c.asExpression && (!c.isGenerated || c.isPrimary)) &&
      metadata.beforeUpdateListeners.length === 0 &&
      metadata.afterUpdateListeners.length === 0 &&
      !others.some(
        (s) => typeof s.beforeUpdate === 'function' || typeof s.afterUpdate === 'function',
      );
    return {
      metadata,
      select,
      selectLocked: `${select} FOR UPDATE`,
      updates: new Map(),
      updatable,
    };
  }

  /** The data source's subscribers, other than change capture, that listen to this entity. */
  private otherSubscribers(metadata: EntityMetadata) {
    return this.dataSource.subscribers.filter((s) => {
      if (s === this.capture) return false;
      const target = s.listenTo?.();
      return (
        !target ||
        target === metadata.target ||
        (typeof target === 'function' &&
          typeof metadata.target === 'function' &&
          metadata.target.prototype instanceof target)
      );
    });
  }
}

/**
 * Was every column loaded? An entity loaded with `select` lacks some: its captured images
 * would miss them (save() reloads the row; this does not).
 */
function loadedWhole(metadata: EntityMetadata, entity: object): boolean {
  return metadata.columns.every((column) => column.getEntityValue(entity) !== undefined);
}

/** The columns the database sets on an update: version, update date. */
function bookkeepingOf(metadata: EntityMetadata): ColumnMetadata[] {
  const columns = [metadata.versionColumn as ColumnMetadata];
  if (metadata.updateDateColumn) columns.push(metadata.updateDateColumn);
  return columns;
}

/** A persisted value as a statement parameter (better-sqlite3 refuses undefined). */
function persisted(value: unknown): unknown {
  return value === undefined ? null : value;
}
