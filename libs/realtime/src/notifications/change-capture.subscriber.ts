import { Inject, Injectable, OnModuleInit } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type {
  DataSource,
  EntitySubscriberInterface,
  InsertEvent,
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
import type { ChangeRecord, Doc, Operation } from '../realtime.types';
import type { ChangeBus } from './change-bus';
import { ChangeLogEntry } from './change-log.entity';
import { CollectionRegistry, RegisteredCollection } from './collection-registry';

/** A transaction's captured changes, kept until it commits (published) or rolls back (dropped). */
interface TxBuffer {
  locked: boolean;
  entries: { depth: number; change: ChangeRecord }[];
}

/** Key of the transaction-scoped advisory lock that orders seq drawing on PostgreSQL. */
const SEQ_LOCK_KEY = 0x7265616c; // 'real'

/** Savepoint depth of a query runner (every TypeORM driver keeps it; the interface hides it). */
const depthOf = (runner: QueryRunner): number =>
  (runner as unknown as { transactionDepth?: number }).transactionDepth ?? 1;

/** Thrown when a write would bypass change capture (and so silently miss subscribers). */
export class ChangeCaptureBypassError extends Error {}

function sameValue(a: unknown, b: unknown): boolean {
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
  private readonly buffers = new WeakMap<QueryRunner, TxBuffer>();
  private readonly postgres: boolean;

  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly registry: CollectionRegistry,
    @Inject(CHANGE_BUS) private readonly bus: ChangeBus,
  ) {
    this.postgres = dataSource.options.type === 'postgres';
  }

  onModuleInit(): void {
    this.dataSource.subscribers.push(this);
  }

  async beforeInsert(event: InsertEvent<object>): Promise<void> {
    if (this.registry.forMetadata(event.metadata)) await this.lockSeq(event.queryRunner);
  }

  async beforeUpdate(event: UpdateEvent<object>): Promise<void> {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection) return;
    if (!event.databaseEntity) this.refuse(collection, 'update');
    await this.lockSeq(event.queryRunner);
  }

  async beforeRemove(event: RemoveEvent<object>): Promise<void> {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection) return;
    if (!event.entity && !event.databaseEntity) this.refuse(collection, 'delete');
    await this.lockSeq(event.queryRunner);
  }

  async beforeSoftRemove(event: SoftRemoveEvent<object>): Promise<void> {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection) return;
    if (!event.entity && !event.databaseEntity) this.refuse(collection, 'soft delete');
    await this.lockSeq(event.queryRunner);
  }

  async afterInsert(event: InsertEvent<object>): Promise<void> {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection) return;
    const after = this.registry.toDoc(collection, event.entity);
    if (after[collection.schema.primaryKey] == null) this.refuse(collection, 'insert');
    await this.capture(event.queryRunner, collection, 'insert', null, after);
  }

  async afterUpdate(event: UpdateEvent<object>): Promise<void> {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection || !event.databaseEntity || !event.entity) return;
    const before = this.registry.toDoc(collection, event.databaseEntity);
    const after = this.registry.mergeDoc(collection, event.databaseEntity, event.entity as object);
    await this.capture(event.queryRunner, collection, 'update', before, after);
  }

  async afterRemove(event: RemoveEvent<object>): Promise<void> {
    const collection = this.registry.forMetadata(event.metadata);
    const source = event.databaseEntity ?? event.entity;
    if (!collection || !source) return;
    const before = this.registry.toDoc(collection, source);
    const pk = collection.schema.primaryKey;
    if (before[pk] == null && event.entityId != null) {
      before[pk] =
        typeof event.entityId === 'object' ? (event.entityId as Doc)[pk] : event.entityId;
    }
    await this.capture(event.queryRunner, collection, 'delete', before, null);
  }

  async afterSoftRemove(event: SoftRemoveEvent<object>): Promise<void> {
    const collection = this.registry.forMetadata(event.metadata);
    const source = event.databaseEntity ?? event.entity;
    if (!collection || !source) return;
    await this.capture(
      event.queryRunner,
      collection,
      'delete',
      this.registry.toDoc(collection, source),
      null,
    );
  }

  async afterRecover(event: RecoverEvent<object>): Promise<void> {
    const collection = this.registry.forMetadata(event.metadata);
    if (!collection || !event.entity) return;
    await this.capture(
      event.queryRunner,
      collection,
      'insert',
      null,
      this.registry.toDoc(collection, event.entity),
    );
  }

  afterTransactionCommit(event: TransactionCommitEvent): void {
    const runner = event.queryRunner;
    const buffer = this.buffers.get(runner);
    // a released savepoint is not a commit: keep collecting until the outer COMMIT
    if (!buffer || runner.isTransactionActive) return;
    this.buffers.delete(runner);
    if (buffer.entries.length === 0) return;
    const committedAt = Date.now();
    const changes = buffer.entries.map((e) => e.change);
    for (const change of changes) change.committedAt = committedAt;
    this.bus.publish(changes);
  }

  afterTransactionRollback(event: TransactionRollbackEvent): void {
    const runner = event.queryRunner;
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

  private refuse(collection: RegisteredCollection, what: string): never {
    throw new ChangeCaptureBypassError(
      `${what} of '${collection.schema.name}' through QueryBuilder/repository.${what === 'update' ? 'update' : 'delete'}() bypasses change capture; use repository.save()/remove()/softRemove() with the entity`,
    );
  }

  private buffer(runner: QueryRunner): TxBuffer {
    let buffer = this.buffers.get(runner);
    if (!buffer) {
      buffer = { locked: false, entries: [] };
      this.buffers.set(runner, buffer);
    }
    return buffer;
  }

  /**
   * PostgreSQL: concurrent transactions may commit in another order than they drew ids.
   * Holding a transaction-scoped advisory lock from before the first captured write until
   * commit makes seq order equal commit order. SQLite writers are already serialised.
   */
  private async lockSeq(runner: QueryRunner): Promise<void> {
    if (!this.postgres || !runner.isTransactionActive) return;
    const buffer = this.buffer(runner);
    if (buffer.locked) return;
    await runner.query('SELECT pg_advisory_xact_lock($1)', [SEQ_LOCK_KEY]);
    buffer.locked = true;
  }

  private async capture(
    runner: QueryRunner,
    collection: RegisteredCollection,
    operation: Operation,
    before: Doc | null,
    after: Doc | null,
  ): Promise<void> {
    await this.lockSeq(runner);
    const doc = (after ?? before) as Doc;
    const documentId = String(doc[collection.schema.primaryKey]);
    let changedFields: string[];
    if (before && after) {
      changedFields = collection.fields.filter(
        (f) => !collection.bookkeeping.has(f) && !sameValue(before[f], after[f]),
      );
    } else {
      changedFields = collection.fields.slice();
    }
    const version = collection.versionField
      ? ((doc[collection.versionField] as number) ?? null)
      : null;
    const row = new ChangeLogEntry();
    row.database = DEFAULT_DATABASE;
    row.collection = collection.schema.name;
    row.documentId = documentId;
    row.operation = operation;
    row.before = before;
    row.after = after;
    row.changedFields = changedFields;
    row.actorId = RequestContext.principal()?.userId ?? null;
    row.version = version;
    row.createdAt = new Date().toISOString();
    const result = await runner.manager.insert(ChangeLogEntry, row as never);
    const seq = String(result.identifiers[0]?.seq ?? row.seq);
    const change: ChangeRecord = {
      seq,
      database: row.database,
      collection: row.collection,
      documentId,
      operation,
      before,
      after,
      changedFields,
      actorId: row.actorId,
      timestamp: row.createdAt,
      version,
    };
    if (!runner.isTransactionActive) {
      // written outside any transaction: already committed
      change.committedAt = Date.now();
      this.bus.publish([change]);
      return;
    }
    this.buffer(runner).entries.push({ depth: depthOf(runner), change });
  }
}
