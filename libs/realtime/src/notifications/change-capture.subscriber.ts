import { Inject, Injectable, Logger, OnModuleInit } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { QueryFailedError, UpdateQueryBuilder } from 'typeorm';
import type {
  DataSource,
  EntityMetadata,
  EntitySubscriberInterface,
  InsertEvent,
  ObjectLiteral,
  QueryRunner,
  RemoveEvent,
  SoftRemoveEvent,
  TransactionCommitEvent,
  TransactionRollbackEvent,
  UpdateEvent,
  RecoverEvent,
} from 'typeorm';
import { RequestContext } from '../auth/request-context';
import { CHANGE_BUS, DEFAULT_DATABASE } from '../realtime.constants';
import { InjectRealtimeOptions } from '../realtime.module-definition';
import type { RealtimeModuleOptions } from '../realtime.options';
import type { ChangeRecord, Doc, Operation } from '../realtime.types';
import type { ChangeBus } from './change-bus';
import { CollectionRegistry, RegisteredCollection } from './collection-registry';
import { actorOf } from './transaction-runner';
import { PreparedSqlite } from '../common/sqlite-handle';
import { readsPlainly, tableOf } from './plain-sql';
import { isoTime } from '../common/iso-time';

/** A transaction's captured changes, kept until it commits (logged, then published) or rolls back (dropped). */
interface TxBuffer {
  entries: { depth: number; change: ChangeRecord }[];
}

const COLUMNS = [
  'database',
  'collection',
  'documentId',
  'operation',
  'before',
  'after',
  'changedFields',
  'actorId',
  'version',
  'createdAt',
]
  .map((c) => `"${c}"`)
  .join(', ');
const VALUE_COLUMNS = COLUMNS;
const SQLITE_INSERT = `INSERT INTO "change_log" (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

/** Key of the transaction-scoped advisory lock that orders seq drawing on PostgreSQL. */
const SEQ_LOCK_KEY = 0x7265616c; // 'real'

/** Change log rows per PostgreSQL INSERT statement. */
const LOG_CHUNK = 1000;

/**
 * PostgreSQL: INSERT of one chunk of change log rows (`values`: `(ord, …columns)` tuples)
 * after taking the seq lock (`lockKey`: a literal or a parameter), rows in `ord` order.
 */
const pgLogInsert = (lockKey: string, values: string[]) =>
  `WITH seq_lock AS (SELECT pg_advisory_xact_lock(${lockKey})) INSERT INTO "change_log" (${COLUMNS}) SELECT ${VALUE_COLUMNS} FROM (VALUES ${values.join(', ')}) AS v(ord, ${VALUE_COLUMNS}), seq_lock ORDER BY v.ord RETURNING "seq"`;

/**
 * PostgreSQL: the one-row log INSERT as a server-side prepared statement, made once per
 * connection and run as `EXECUTE …; COMMIT` in one message. Parsing and planning the INSERT
 * with the lock's CTE is a good part of its cost: prepared, the database spends about a
 * tenth less CPU per write (write-path bench, 8 writers). Each EXECUTE takes the
 * (re-entrant) seq lock before drawing its seq, so several in one message get ascending
 * seqs in their order.
 */
const PREPARED_LOG = 'nest_realtime_change_log_v1';
const PREPARE_LOG = `PREPARE ${PREPARED_LOG} (text, text, text, text, text, text, text, text, integer, text) AS WITH seq_lock AS (SELECT pg_advisory_xact_lock(${SEQ_LOCK_KEY})) INSERT INTO "change_log" (${COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM seq_lock RETURNING "seq"`;
const EXISTING_LOG_STATEMENT = `SELECT 1 FROM pg_prepared_statements WHERE name = '${PREPARED_LOG}'`;
/**
 * The change log rows and COMMIT as one message: one EXECUTE of PREPARED_LOG per change
 * (`executes`, one seq per result) or multi-row INSERTs (up to LOG_CHUNK seqs per result).
 */
interface LogMessage {
  sql: string;
  executes: boolean;
}
/** SQLSTATE of an EXECUTE of a statement the session does not have (DEALLOCATE ALL, DISCARD ALL, a pooler's other session) */
const STATEMENT_MISSING = '26000';
/** SQLSTATE of "cached plan must not change result type" (change_log altered under a running app) */
const PLAN_CHANGED = '0A000';
/** Statements lost this many times in a process: it stops preparing (a transaction pooler, most likely). */
const MAX_LOST_STATEMENTS = 2;
/** Up to this many changes a transaction is logged by one EXECUTE each; above, by multi-row INSERTs. */
const MAX_EXECUTES = 32;

/**
 * A string as an SQL literal, exactly as node-postgres' escapeLiteral writes it (quotes
 * doubled; with a backslash, an E'' literal with backslashes doubled), but through the
 * engine's string search and replace instead of a character-by-character loop: the log
 * row's JSON is most of a write's SQL.
 */
export function sqlLiteral(value: string): string {
  const quoted = value.includes("'") ? value.replace(/'/g, "''") : value;
  return value.includes('\\') ? ` E'${quoted.replace(/\\/g, '\\\\')}'` : `'${quoted}'`;
}

/** Sets the seqs a chunk's INSERT returned on its changes (from `from` on). */
function assignSeqs(changes: ChangeRecord[], from: number, rows: { seq: number | string }[]) {
  // inserted in `ord` order, so ascending seqs belong to the rows in that order
  const seqs = rows.map((r) => Number(r.seq)).sort((a, b) => a - b);
  seqs.forEach((seq, i) => (changes[from + i].seq = String(seq)));
}

/** Savepoint depth of a query runner (every TypeORM driver keeps it; the interface hides it). */
const depthOf = (runner: QueryRunner): number =>
  (runner as unknown as { transactionDepth?: number }).transactionDepth ?? 1;

/**
 * The part of node-postgres' client that the COMMIT with the log insert uses (`query`;
 * `escapeLiteral` is only how pgClientOf recognises one).
 */
interface PgClient {
  query(sql: string): Promise<PgResult | PgResult[]>;
  escapeLiteral(value: string): string;
}
interface PgResult {
  command: string;
  rows: { seq: number | string }[];
}

/** How far back (rows of the collection) a raced UPDATE looks for the row's previous image. */
const RACE_LOOKBACK = 10_000;

/** A version column's value as a number (pg returns bigint columns as strings). */
function versionOf(value: unknown): number | null {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? value : null;
  if (typeof value === 'string' && /^-?\d{1,15}$/.test(value)) return Number(value);
  return null;
}

/** Above this many characters of log rows, INSERT and COMMIT are not sent as one message. */
const MAX_COMMIT_MESSAGE = 16 * 1024 * 1024;

const COMMIT_CALL = /this\.query\(["']COMMIT["']\)/;
const ridesCommitCache = new WeakMap<object, boolean>();

/**
 * Does this query runner end a transaction with `this.query("COMMIT")` after the
 * beforeTransactionCommit listeners, as TypeORM's runners do? Checked once per runner
 * class: if a TypeORM version commits another way, the log is written in the listener.
 */
function ridesCommit(runner: QueryRunner): boolean {
  const proto = Object.getPrototypeOf(runner) as { commitTransaction?: () => unknown };
  let rides = ridesCommitCache.get(proto);
  if (rides === undefined) {
    rides =
      typeof proto.commitTransaction === 'function' &&
      COMMIT_CALL.test(proto.commitTransaction.toString());
    ridesCommitCache.set(proto, rides);
  }
  return rides;
}

/** node-postgres' client of a PostgreSQL query runner, if that is what it has. */
function pgClientOf(runner: QueryRunner): PgClient | null {
  const client = (runner as unknown as { databaseConnection?: Partial<PgClient> })
    .databaseConnection;
  return typeof client?.escapeLiteral === 'function' && typeof client.query === 'function'
    ? (client as PgClient)
    : null;
}

/** lockRow found no row: another transaction deleted it before this write could lock it. */
const GONE = Symbol('gone');

/** Thrown when a write would bypass change capture (and so silently miss subscribers). */
export class ChangeCaptureBypassError extends Error {}

/** Per DataSource: the refusal of a QueryBuilder update of this entity, if it is one. */
const updateGuards = new WeakMap<DataSource, (metadata: EntityMetadata) => Error | undefined>();
/** UpdateQueryBuilder's execute, wrapped (once per process) */
let guardedExecute: UpdateQueryBuilder<ObjectLiteral>['execute'] | undefined;

/**
 * Refuses `QueryBuilder.update()` (so also `repository.update()`, `increment()`, …) of a
 * registered entity when it is executed, before it runs or opens a transaction: wraps
 * `UpdateQueryBuilder.prototype.execute` once, and asks the guard of the builder's
 * DataSource (others are untouched). Updates that call no listeners
 * (`callListeners(false)`, as save() sends its own) go through as TypeORM runs them.
 *
 * Not a `beforeUpdate` hook, as it was: TypeORM re-computes the changes of every save()
 * after any before-update hook of any subscriber that listens to the entity has run
 * (SubjectExecutor's `recompute`), whether the hook did anything or not; about a tenth of
 * a save() on SQLite (docs/performance.md).
 */
function guardQueryBuilderUpdates(
  dataSource: DataSource,
  guard: (metadata: EntityMetadata) => Error | undefined,
): void {
  updateGuards.set(dataSource, guard);
  if (!guardedExecute) {
    const execute = UpdateQueryBuilder.prototype.execute;
    guardedExecute = function (this: UpdateQueryBuilder<ObjectLiteral>) {
      const { callListeners, mainAlias } = this.expressionMap;
      if (callListeners && mainAlias?.hasMetadata) {
        const refusal = updateGuards.get(this.connection)?.(mainAlias.metadata);
        if (refusal) return Promise.reject(refusal);
      }
      return execute.call(this);
    };
    UpdateQueryBuilder.prototype.execute = guardedExecute;
  }
  // a DataSource of another copy of typeorm (two installed) makes builders of its own,
  // which this wrap does not reach: their updates would commit unlogged. Say so at start.
  const probe = dataSource.createQueryBuilder().update();
  if (probe.execute !== guardedExecute) {
    throw new Error(
      'RealtimeModule: the DataSource comes from another copy of typeorm than the library (two "typeorm" packages installed?); QueryBuilder updates of collections would bypass change capture. Keep one copy (npm ls typeorm).',
    );
  }
}

/** The repository method that makes each refused write, for the refusal's message. */
const BYPASS_METHOD: Record<string, string> = {
  insert: 'insert',
  update: 'update',
  delete: 'delete',
  'soft delete': 'softDelete',
  restore: 'restore',
};

function bypassError(collection: RegisteredCollection, what: string): ChangeCaptureBypassError {
  return new ChangeCaptureBypassError(
    `${what} of '${collection.schema.name}' through QueryBuilder/repository.${BYPASS_METHOD[what] ?? what}() bypasses change capture; use repository.save()/remove()/softRemove()/recover() with the entity`,
  );
}

/** Do two column values (as entities hold them, or as the driver stores them) hold the same? */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Captures every insert, update, (soft) remove and recover of a registered entity, writes
 * it to the change log in the same transaction, and publishes the transaction's changes on
 * the bus once it has committed. A rolled-back transaction (or savepoint) publishes nothing.
 *
 * Writes through `QueryBuilder.update/delete` (and `repository.update/delete`) name no
 * entity, so they cannot be captured: they are refused with ChangeCaptureBypassError
 * before they run. Use `save()`, `remove()` and `softRemove()` on registered entities.
 */
@Injectable()
export class ChangeCaptureSubscriber implements EntitySubscriberInterface, OnModuleInit {
  private readonly logger = new Logger(ChangeCaptureSubscriber.name);
  private readonly buffers = new WeakMap<QueryRunner, TxBuffer>();
  /** PostgreSQL: the row as committed, read under its lock just before it is written */
  private readonly current = new WeakMap<object, Doc | typeof GONE>();
  private readonly lockSqlCache = new Map<RegisteredCollection, string | null>();
  /** transactions whose COMMIT will write their change log rows */
  private readonly riders = new WeakSet<QueryRunner>();
  private readonly wrapped = new WeakSet<QueryRunner>();
  private readonly postgres: boolean;
  /** better-sqlite3: the change log insert, prepared once on the driver's connection */
  private readonly sqliteInsert: PreparedSqlite;

  /** PostgreSQL: log rows through PREPARED_LOG (changeLog.preparedStatements) */
  private prepared: boolean;
  /** EXECUTEs that found no statement (STATEMENT_MISSING) in this process */
  private lostStatements = 0;
  /** node-postgres clients whose session has PREPARED_LOG */
  private readonly preparedOn = new WeakSet<PgClient>();

  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly registry: CollectionRegistry,
    @Inject(CHANGE_BUS) private readonly bus: ChangeBus,
    @InjectRealtimeOptions() private readonly options: RealtimeModuleOptions,
  ) {
    this.postgres = dataSource.options.type === 'postgres';
    this.prepared = options.changeLog?.preparedStatements !== false;
    this.sqliteInsert = new PreparedSqlite(dataSource, SQLITE_INSERT);
  }

  onModuleInit(): void {
    this.dataSource.subscribers.push(this);
    guardQueryBuilderUpdates(this.dataSource, (metadata) => {
      const collection = this.registry.forMetadata(metadata);
      return collection ? bypassError(collection, 'update') : undefined;
    });
    // a before-update hook costs every save() (see guardQueryBuilderUpdates): only
    // PostgreSQL's unversioned collections need one, to read the row under its lock;
    // then, as this subscriber listens to every entity, every save() of any entity pays
    const unversioned = this.options.collections.some(
      (c) =>
        this.dataSource.hasMetadata(c.entity) &&
        !this.dataSource.getMetadata(c.entity).versionColumn,
    );
    if (this.postgres && unversioned) this.beforeUpdate = (event) => this.lockForUpdate(event);
  }

  /** Set only when needed (onModuleInit): TypeORM calls it before each save()'s UPDATE. */
  beforeUpdate?: (event: UpdateEvent<object>) => Promise<void> | void;

  // The hooks return a promise only when they have something to wait for (TypeORM awaits
  // what a hook returns): on SQLite a write's capture is synchronous from end to end.

  private lockForUpdate(event: UpdateEvent<object>): Promise<void> | void {
    const collection = this.registry.forMetadata(event.metadata);
    // the UPDATE of a versioned entity bumps the version: afterUpdate tells from it whether
    // the row save() loaded was still the committed one, and reads the row only if not
    if (!collection || collection.versionField || !event.databaseEntity) return;
    return this.lockRow(event.queryRunner, collection, event.databaseEntity, event.entity);
  }

  beforeRemove(event: RemoveEvent<object>): Promise<void> | void {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection) return;
    if (!event.entity && !event.databaseEntity) return this.refuse(collection, 'delete');
    return this.lockRow(event.queryRunner, collection, event.databaseEntity, event.entity);
  }

  beforeSoftRemove(event: SoftRemoveEvent<object>): Promise<void> | void {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection) return;
    if (!event.entity && !event.databaseEntity) return this.refuse(collection, 'soft delete');
    return this.lockRow(event.queryRunner, collection, event.databaseEntity, event.entity);
  }

  /**
   * `QueryBuilder.restore()` (`repository.restore()`) names no entity: refused, as a soft
   * delete is (its AfterRecover carries no entity either, so it would commit unlogged).
   */
  beforeRecover(event: RecoverEvent<object>): Promise<void> | void {
    const collection = this.registry.forMetadata(event.metadata);
    if (collection && !event.entity && !event.databaseEntity) {
      return this.refuse(collection, 'restore');
    }
  }

  /**
   * The outermost COMMIT is about to run: write the transaction's changes to the change
   * log, in this transaction. On PostgreSQL the same statement first takes a
   * transaction-scoped advisory lock, held until COMMIT, so seqs are drawn in commit
   * order. Taking it last keeps it short (one INSERT and the COMMIT, sent together: see
   * rideCommit) and cannot deadlock: the holder waits for nothing but its own commit.
   */
  beforeTransactionCommit(event: TransactionCommitEvent): Promise<void> | void {
    const runner = event.queryRunner;
    if (depthOf(runner) > 1) return;
    if (ridesCommit(runner)) {
      // armed even with nothing captured yet: another commit listener may still save
      this.rideCommit(runner);
      return;
    }
    const buffer = this.buffers.get(runner);
    if (!buffer || buffer.entries.length === 0) return;
    return this.writeLog(
      runner,
      buffer.entries.map((e) => e.change),
    );
  }

  afterInsert(event: InsertEvent<object>): Promise<void> | void {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection) return;
    const after = this.registry.toDoc(collection, event.entity);
    if (after[collection.schema.primaryKey] == null) return this.refuse(collection, 'insert');
    return this.capture(event.queryRunner, collection, 'insert', null, after);
  }

  afterUpdate(event: UpdateEvent<object>): Promise<void> | void {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection || !event.databaseEntity || !event.entity) return;
    const saved = this.registry.mergeDoc(collection, event.databaseEntity, event.entity as object);
    const current = this.takeCurrent(event.databaseEntity, event.entity);
    // another transaction deleted the row meanwhile: this UPDATE changed nothing
    if (current === GONE) return;
    if (!current) {
      const before = this.registry.toDoc(collection, event.databaseEntity);
      if (this.raced(event, collection, before, saved)) {
        return this.captureRaced(event.queryRunner, collection, event, before);
      }
      return this.capture(event.queryRunner, collection, 'update', before, saved);
    }
    // the columns this UPDATE wrote (and the ones the database bumps) over the row it found
    const after = { ...current };
    for (const column of event.updatedColumns)
      after[column.propertyName] = saved[column.propertyName];
    for (const field of collection.bookkeeping) after[field] = saved[field];
    return this.capture(event.queryRunner, collection, 'update', current, after);
  }

  /**
   * An UPDATE that EntityWriter made without TypeORM's persistence (so without the events
   * above): `before` is the row it wrote over, `after` the row it left.
   */
  captureUpdate(
    runner: QueryRunner,
    collection: RegisteredCollection,
    before: Doc,
    after: Doc,
  ): Promise<void> | void {
    return this.capture(runner, collection, 'update', before, after);
  }

  afterRemove(event: RemoveEvent<object>): Promise<void> | void {
    return this.captureDelete(event);
  }

  /** A soft-removed document leaves every result set: a `delete` to subscribers. */
  afterSoftRemove(event: SoftRemoveEvent<object>): Promise<void> | void {
    return this.captureDelete(event);
  }

  private captureDelete(
    event: RemoveEvent<object> | SoftRemoveEvent<object>,
  ): Promise<void> | void {
    const collection = this.registry.forMetadata(event.metadata);
    const source = event.databaseEntity ?? event.entity;
    if (!collection || !source) return;
    const current = this.takeCurrent(event.databaseEntity, event.entity);
    if (current === GONE) return; // deleted by another transaction meanwhile: nothing to log
    const before = current ?? this.registry.toDoc(collection, source);
    // remove() clears the entity's id: take it from the event
    const pk = collection.schema.primaryKey;
    if (before[pk] == null && event.entityId != null) {
      before[pk] =
        typeof event.entityId === 'object' ? (event.entityId as Doc)[pk] : event.entityId;
    }
    return this.capture(event.queryRunner, collection, 'delete', before, null);
  }

  afterRecover(event: RecoverEvent<object>): Promise<void> | void {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection || !event.entity) return;
    // the caller's object may hold the key alone (`recover({ id })`): the row TypeORM
    // loaded (with the deleted ones) fills in the rest, and it is deleted no longer
    const doc = event.databaseEntity
      ? this.registry.mergeDoc(collection, event.databaseEntity, event.entity)
      : this.registry.toDoc(collection, event.entity);
    const deleteDate = collection.metadata.deleteDateColumn;
    if (deleteDate) doc[deleteDate.propertyName] = null;
    return this.capture(event.queryRunner, collection, 'insert', null, doc);
  }

  afterTransactionCommit(event: TransactionCommitEvent): void {
    const runner = event.queryRunner;
    const buffer = this.buffers.get(runner);
    if (!buffer) return;
    if (runner.isTransactionActive) {
      // a released savepoint is not a commit: its changes now belong to the enclosing level
      const depth = depthOf(runner);
      for (const entry of buffer.entries) if (entry.depth > depth) entry.depth = depth;
      return;
    }
    this.buffers.delete(runner);
    if (buffer.entries.length === 0) return;
    const committedAt = Date.now();
    const changes: ChangeRecord[] = [];
    for (const { change } of buffer.entries) {
      change.committedAt = committedAt;
      if (change.seq !== '') changes.push(change);
    }
    if (changes.length < buffer.entries.length) {
      // only when the log is written in the listener (a TypeORM that commits otherwise)
      // and another commit listener saved after it: committed, but in no log
      this.logger.error(
        `${buffer.entries.length - changes.length} committed change(s) have no change log row (saved by a commit listener after change capture's own): not delivered`,
      );
    }
    if (changes.length) this.bus.publish(changes);
  }

  afterTransactionRollback(event: TransactionRollbackEvent): void {
    const runner = event.queryRunner;
    if (!runner.isTransactionActive) this.riders.delete(runner);
    const buffer = this.buffers.get(runner);
    if (!buffer) return;
    if (!runner.isTransactionActive) {
      this.buffers.delete(runner);
      return;
    }
    // a savepoint rolled back: drop what was captured inside it
    const depth = depthOf(runner);
    buffer.entries = buffer.entries.filter((e) => e.depth <= depth);
  }

  /**
   * PostgreSQL, a versioned entity: did another transaction commit a change of the row
   * between save() loading it and this UPDATE? Every captured write bumps the version by
   * one (TypeORM's UPDATE sets `version = version + 1` and returns it), so the UPDATE
   * started from the loaded row exactly when it returned the loaded version plus one.
   */
  private raced(
    event: UpdateEvent<object>,
    collection: RegisteredCollection,
    before: Doc,
    saved: Doc,
  ): boolean {
    const field = collection.versionField;
    if (!this.postgres || !field || !event.queryRunner.isTransactionActive) return false;
    const loaded = versionOf(before[field]);
    return (
      loaded === null ||
      versionOf(saved[field]) !== loaded + 1 ||
      // a version the caller set itself proves nothing
      event.updatedColumns.some((column) => column.propertyName === field)
    );
  }

  /**
   * The UPDATE of a versioned row ran on a row another transaction had changed since save()
   * loaded it (or it cannot tell): the row as this UPDATE left it is read under the lock the
   * UPDATE holds, and the row it started from is that other transaction's logged image.
   */
  private async captureRaced(
    runner: QueryRunner,
    collection: RegisteredCollection,
    event: UpdateEvent<object>,
    loaded: Doc,
  ): Promise<void> {
    const after = await this.lockedDoc(runner, collection, event.databaseEntity as object);
    // another transaction deleted the row meanwhile: this UPDATE changed nothing
    if (after === GONE || after === null) return;
    const field = collection.versionField as string;
    const id = String(after[collection.schema.primaryKey]);
    const version = versionOf(after[field]);
    const isPrevious = (doc: Doc | null): doc is Doc =>
      doc !== null && version !== null && versionOf(doc[field]) === version - 1;
    // this transaction's own earlier change of the row (not logged until COMMIT), else the
    // newest logged one among the collection's latest RACE_LOOKBACK rows
    let prior: Doc | null = null;
    const own = this.buffers.get(runner)?.entries ?? [];
    for (let i = own.length - 1; i >= 0 && prior === null; i--) {
      const { change } = own[i];
      if (change.collection === collection.schema.name && change.documentId === id) {
        prior = change.after;
      }
    }
    if (!isPrevious(prior)) {
      const [last] = (await runner.query(
        `SELECT "after" FROM (SELECT "seq", "after", "documentId" FROM "change_log" WHERE "collection" = $1 ORDER BY "seq" DESC LIMIT ${RACE_LOOKBACK}) AS recent WHERE "documentId" = $2 ORDER BY "seq" DESC LIMIT 1`,
        [collection.schema.name, id],
      )) as { after: string | null }[];
      prior = last?.after == null ? null : (JSON.parse(last.after) as Doc);
    }
    let before: Doc;
    if (isPrevious(prior)) {
      before = prior;
    } else {
      // not in the log (a write that bypassed capture, or retention took it): the columns
      // this UPDATE did not write are as it found them; those it wrote, as save() loaded them
      this.logger.warn(
        `${collection.schema.name} ${id}: the row changed between load and update and its previous image is not in the change log; the change's before-image of the updated columns is the loaded one`,
      );
      before = { ...after };
      for (const column of event.updatedColumns) {
        before[column.propertyName] = loaded[column.propertyName];
      }
      for (const f of collection.bookkeeping) before[f] = loaded[f];
    }
    return this.capture(runner, collection, 'update', before, after);
  }

  /**
   * PostgreSQL runs writers side by side, and save() compares the entity with a copy of the
   * row it loaded without a lock: another transaction may have committed a change of that
   * row since. Locking the row and reading it again, just before this write, gives the exact
   * image the write starts from (no one else can change the row until this transaction
   * ends), so that `before`, `after` and `changedFields` are those of the committed rows.
   * The lock is the one the UPDATE or DELETE would take next anyway. (An UPDATE of a
   * versioned entity skips this read: its version tells afterwards, see `raced`.) SQLite
   * writers run one at a time (TransactionRunner), so what save() loaded is current.
   */
  private lockRow(
    runner: QueryRunner,
    collection: RegisteredCollection,
    loaded: object | undefined,
    entity: object | undefined,
  ): Promise<void> | void {
    const key = entity ?? loaded;
    if (!this.postgres || !runner.isTransactionActive || !loaded || !key) return;
    return this.readLocked(runner, collection, loaded, key);
  }

  private async readLocked(
    runner: QueryRunner,
    collection: RegisteredCollection,
    loaded: object,
    key: object,
  ): Promise<void> {
    const doc = await this.lockedDoc(runner, collection, loaded);
    if (doc !== null) this.current.set(key, doc);
  }

  /** The row of `loaded`'s key, read under a row lock; GONE: no such row; null: no key. */
  private async lockedDoc(
    runner: QueryRunner,
    collection: RegisteredCollection,
    loaded: object,
  ): Promise<Doc | typeof GONE | null> {
    const metadata = collection.metadata;
    const sql = this.lockSql(collection);
    if (sql === null) {
      const id = metadata.getEntityIdMap(loaded);
      if (!id) return null;
      const row = await runner.manager.findOne(metadata.target, {
        where: id,
        lock: { mode: 'pessimistic_write' },
      });
      return row ? this.registry.toDoc(collection, row) : GONE;
    }
    const ids = metadata.primaryColumns.map((column) => column.getEntityValue(loaded) as unknown);
    if (ids.some((id) => id == null)) return null;
    // one plain statement instead of a find(): the same lock and row, without building a
    // query and an entity through the ORM on every write
    const rows = (await runner.query(sql, ids)) as Record<string, unknown>[];
    if (rows.length === 0) return GONE;
    const row: object = {};
    const driver = this.dataSource.driver;
    for (const column of metadata.columns) {
      column.setEntityValue(row, driver.prepareHydratedValue(rows[0][column.databaseName], column));
    }
    return this.registry.toDoc(collection, row);
  }

  /** `SELECT * … WHERE <primary key> FOR UPDATE` of a collection; null: use find() instead. */
  private lockSql(collection: RegisteredCollection): string | null {
    let sql = this.lockSqlCache.get(collection);
    if (sql !== undefined) return sql;
    const metadata = collection.metadata;
    const driver = this.dataSource.driver;
    sql = readsPlainly(metadata)
      ? `SELECT * FROM ${tableOf(metadata, driver)} WHERE ${metadata.primaryColumns
          .map((c, i) => `${driver.escape(c.databaseName)} = $${i + 1}`)
          .join(' AND ')} FOR UPDATE`
      : null;
    this.lockSqlCache.set(collection, sql);
    return sql;
  }

  /** The row lockRow read for this write, if it did (and it still existed). */
  private takeCurrent(
    loaded: object | undefined,
    entity: object | undefined,
  ): Doc | typeof GONE | null {
    const key = entity ?? loaded;
    if (!key) return null;
    const current = this.current.get(key) ?? null;
    this.current.delete(key);
    return current;
  }

  /**
   * A rejected promise, not a throw: TypeORM calls the hooks of several entities in a loop
   * and awaits what they returned; a throw would end the loop and leave the promises that
   * earlier hooks returned unawaited.
   */
  private refuse(collection: RegisteredCollection, what: string): Promise<never> {
    return Promise.reject(bypassError(collection, what));
  }

  private capture(
    runner: QueryRunner,
    collection: RegisteredCollection,
    operation: Operation,
    before: Doc | null,
    after: Doc | null,
  ): Promise<void> | void {
    const doc = (after ?? before) as Doc;
    let changedFields: string[];
    if (before && after) {
      changedFields = collection.fields.filter(
        (f) => !collection.bookkeeping.has(f) && !sameValue(before[f], after[f]),
      );
    } else {
      changedFields = collection.fields.slice();
    }
    const change: ChangeRecord = {
      seq: '',
      database: DEFAULT_DATABASE,
      collection: collection.schema.name,
      documentId: String(doc[collection.schema.primaryKey]),
      operation,
      before,
      after,
      changedFields,
      actorId: actorOf(runner) ?? RequestContext.principal()?.userId ?? null,
      timestamp: isoTime(Date.now()),
      version: collection.versionField ? versionOf(doc[collection.versionField]) : null,
    };
    if (!runner.isTransactionActive) return this.logCommitted(runner, change);
    let buffer = this.buffers.get(runner);
    if (!buffer) {
      buffer = { entries: [] };
      this.buffers.set(runner, buffer);
    }
    buffer.entries.push({ depth: depthOf(runner), change });
  }

  /** A change written outside any transaction: it is committed already. */
  private async logCommitted(runner: QueryRunner, change: ChangeRecord): Promise<void> {
    await this.writeLog(runner, [change]);
    change.committedAt = Date.now();
    this.bus.publish([change]);
  }

  /** Inserts change log rows (in the caller's transaction) and sets their seqs. */
  private writeLog(runner: QueryRunner, changes: ChangeRecord[]): Promise<void> | void {
    const rows = changes.map((c) => [...this.logValues(c), c.version, c.timestamp]);
    if (this.postgres) return this.writePostgresLog(runner, changes, rows);
    // better-sqlite3: the insert runs on the transaction's connection without TypeORM's
    // query path, which cost about a tenth of a write (so TypeORM's query log omits it)
    const insert = this.sqliteInsert.get()?.statement;
    if (!insert) return this.writeSqliteLog(runner, changes, rows);
    for (let i = 0; i < rows.length; i++) {
      changes[i].seq = String(insert.run(...rows[i]).lastInsertRowid);
    }
  }

  /**
   * SQLite through TypeORM's query runner (the `sqlite` driver, whose query() answers an
   * INSERT with the new rowid; untested here: the sqlite3 package is not installed).
   */
  private async writeSqliteLog(
    runner: QueryRunner,
    changes: ChangeRecord[],
    rows: unknown[][],
  ): Promise<void> {
    for (let i = 0; i < rows.length; i++) {
      const result: unknown = await runner.query(SQLITE_INSERT, rows[i]);
      const seq = Array.isArray(result) ? (result[0] as { seq?: unknown })?.seq : result;
      if (typeof seq !== 'number' && typeof seq !== 'bigint') {
        throw new Error(`the change log insert returned no rowid (${JSON.stringify(result)})`);
      }
      changes[i].seq = String(seq);
    }
  }

  /**
   * The log is written at the COMMIT itself, which TypeORM sends once every commit listener
   * is done: a change that another listener saves after this one ran is logged too. The
   * runner's `query` is wrapped (once) to catch that COMMIT.
   *
   * PostgreSQL: the seq lock is held from the log insert to the end of COMMIT, so every
   * moment between the two is a moment no other writer can commit. Sent as two statements,
   * the gap includes a round trip through this process's event loop (on a busy server,
   * most of the lock's hold), so they go as one message, `INSERT …; COMMIT`, which the
   * database runs without a pause.
   */
  private rideCommit(runner: QueryRunner): void {
    this.riders.add(runner);
    if (this.wrapped.has(runner)) return;
    // wrapped once for the runner's life (SQLite's one runner serves every transaction)
    this.wrapped.add(runner);
    const target = runner as QueryRunner & { query: QueryRunner['query'] };
    const base = target.query as (...args: unknown[]) => Promise<unknown>;
    target.query = ((query: string, parameters?: unknown[], structured?: boolean) => {
      if (query !== 'COMMIT' || !this.riders.delete(runner)) {
        return base.call(target, query, parameters, structured);
      }
      const changes = this.buffers.get(runner)?.entries.map((e) => e.change) ?? [];
      const commit = () => base.call(target, query, parameters, structured);
      if (changes.length === 0) return commit();
      const client = this.postgres ? pgClientOf(runner) : null;
      const message = client ? this.logAndCommitSql(changes) : null;
      if (client && message) return this.commitWithLog(runner, client, message, changes);
      // SQLite, or a transaction too large for one message: the log rows, then the COMMIT
      const written = this.writeLog(runner, changes);
      return written ? written.then(commit) : commit();
    }) as QueryRunner['query'];
  }

  /**
   * The change log rows and the COMMIT as one message, every value a literal: up to
   * MAX_EXECUTES changes, one `EXECUTE` of PREPARED_LOG each (when prepared statements are
   * on); otherwise multi-row INSERTs of LOG_CHUNK rows. Null when it would exceed
   * MAX_COMMIT_MESSAGE (such a transaction is logged by parameterized INSERTs in
   * LOG_CHUNK-row chunks instead, then committed).
   */
  private logAndCommitSql(changes: ChangeRecord[]): LogMessage | null {
    const text = (v: string | null) => (v === null ? 'NULL' : sqlLiteral(v));
    const int = (v: unknown) => `${versionOf(v) ?? 'NULL'}::integer`;
    let size = 0;
    /** a change's column values as literals, counted against MAX_COMMIT_MESSAGE */
    const literals = (c: ChangeRecord) => {
      const list = `${this.logValues(c).map(text).join(', ')}, ${int(c.version)}, ${text(c.timestamp)}`;
      size += list.length;
      return list;
    };
    const statements: string[] = [];
    const executes = this.prepared && changes.length <= MAX_EXECUTES;
    if (executes) {
      for (const c of changes) statements.push(`EXECUTE ${PREPARED_LOG}(${literals(c)})`);
    } else {
      for (let from = 0; from < changes.length; from += LOG_CHUNK) {
        const chunk = changes.slice(from, from + LOG_CHUNK);
        const values = chunk.map((c, i) => `(${int(i)}, ${literals(c)})`);
        if (size > MAX_COMMIT_MESSAGE) return null;
        statements.push(pgLogInsert(String(SEQ_LOCK_KEY), values));
      }
    }
    if (size > MAX_COMMIT_MESSAGE) return null;
    return { sql: `${statements.join('; ')}; COMMIT`, executes };
  }

  private async commitWithLog(
    runner: QueryRunner,
    client: PgClient,
    message: LogMessage,
    changes: ChangeRecord[],
  ): Promise<never[]> {
    const logger = runner.connection.logger;
    const { executes } = message;
    let results: PgResult[];
    let statement = message.sql;
    const send = (sql: string) => {
      statement = sql;
      logger.logQuery(sql, undefined, runner);
      return client.query(sql);
    };
    try {
      if (executes && !this.preparedOn.has(client)) {
        // once per connection (a prepared statement outlives a rollback of its
        // transaction); one of that name already there (left by another instance, or
        // planned for a change_log since altered) is replaced
        const existing = await send(EXISTING_LOG_STATEMENT);
        if ((Array.isArray(existing) ? existing[0] : existing).rows.length > 0) {
          await send(`DEALLOCATE ${PREPARED_LOG}`);
        }
        await send(PREPARE_LOG);
        this.preparedOn.add(client);
      }
      const raw = await send(message.sql);
      results = Array.isArray(raw) ? raw : [raw];
    } catch (e) {
      if (executes) this.lostPrepared(client, e);
      logger.logQueryError(e as Error, statement, undefined, runner);
      throw new QueryFailedError(statement, undefined, e as Error);
    }
    // one result per EXECUTE (one row each) or per chunk's INSERT, then the COMMIT's
    const perResult = executes ? 1 : LOG_CHUNK;
    for (let k = 0; k * perResult < changes.length; k++) {
      assignSeqs(changes, k * perResult, results[k].rows);
    }
    return [];
  }

  /**
   * An EXECUTE failed because the session's statement is missing or stale: this
   * transaction fails (it rolls back, nothing is lost), the next one on the connection
   * prepares again. Statements that go missing again and again mean a pooler that hands
   * one client's transactions to different sessions: the process stops preparing.
   */
  private lostPrepared(client: PgClient, e: unknown): void {
    const code = (e as { code?: string }).code;
    if (code !== STATEMENT_MISSING && code !== PLAN_CHANGED) return;
    this.preparedOn.delete(client);
    if (code === STATEMENT_MISSING && ++this.lostStatements >= MAX_LOST_STATEMENTS) {
      if (!this.prepared) return;
      this.prepared = false;
      this.logger.warn(
        `the prepared change log INSERT went missing from ${this.lostStatements} sessions: no longer preparing it in this process (behind PgBouncer in transaction or statement mode, set changeLog.preparedStatements: false / CHANGE_LOG_PREPARED=false)`,
      );
      return;
    }
    this.logger.warn(
      `the prepared change log INSERT was ${code === PLAN_CHANGED ? 'stale (change_log altered)' : 'missing'} in this session: that transaction failed; the next one prepares it again`,
    );
  }

  /** The text columns of a change's log row, from `database` to `actorId`. */
  private logValues(c: ChangeRecord): (string | null)[] {
    return [
      c.database,
      c.collection,
      c.documentId,
      c.operation,
      c.before === null ? null : JSON.stringify(c.before),
      c.after === null ? null : JSON.stringify(c.after),
      JSON.stringify(c.changedFields),
      c.actorId,
    ];
  }

  private async writePostgresLog(
    runner: QueryRunner,
    changes: ChangeRecord[],
    rows: unknown[][],
  ): Promise<void> {
    for (let from = 0; from < rows.length; from += LOG_CHUNK) {
      const chunk = rows.slice(from, from + LOG_CHUNK);
      const params: unknown[] = [SEQ_LOCK_KEY];
      const values = chunk.map((row, i) => {
        const at = params.length;
        params.push(i, ...row);
        const p = (k: number) => `$${at + k + 1}`;
        return `(${p(0)}::integer, ${p(1)}, ${p(2)}, ${p(3)}, ${p(4)}, ${p(5)}, ${p(6)}, ${p(7)}, ${p(8)}, ${p(9)}::integer, ${p(10)})`;
      });
      const result: { seq: number | string }[] = await runner.query(
        pgLogInsert('$1', values),
        params,
      );
      assignSeqs(changes, from, result);
    }
  }
}
