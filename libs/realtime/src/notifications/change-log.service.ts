import {
  Injectable,
  Logger,
  OnApplicationBootstrap,
  OnApplicationShutdown,
  OnModuleInit,
} from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Between, LessThan, LessThanOrEqual, Repository } from 'typeorm';
import { AuditLog } from '../audit/audit-log.entity';
import { narrowKeys } from '../common/key-column';
import { PreparedSqlite } from '../common/sqlite-handle';
import { InjectRealtimeOptions } from '../realtime.module-definition';
import type { RealtimeModuleOptions } from '../realtime.options';
import type { ChangeRecord, Operation } from '../realtime.types';
import { ChangeLogEntry } from './change-log.entity';
import { tableOf } from './plain-sql';
import { TransactionRunner } from './transaction-runner';

const DAY = 24 * 60 * 60 * 1000;

export function toRecord(row: ChangeLogEntry): ChangeRecord {
  return {
    seq: String(row.seq),
    database: row.database,
    collection: row.collection,
    documentId: row.documentId,
    operation: row.operation as Operation,
    before: row.before,
    after: row.after,
    changedFields: row.changedFields,
    actorId: row.actorId,
    timestamp: row.createdAt,
    version: row.version,
  };
}

/** Reads and prunes the change log. */
@Injectable()
export class ChangeLogService
  implements OnModuleInit, OnApplicationBootstrap, OnApplicationShutdown
{
  private readonly logger = new Logger(ChangeLogService.name);
  private timer?: NodeJS.Timeout;
  private readonly maxAgeMs: number;
  private readonly maxRows: number;
  private readonly pruneIntervalMs: number;
  /** the head query in plain SQL: the feed polls it every second, on every node */
  private readonly headSql: string;
  private readonly sqliteHead: PreparedSqlite;

  constructor(
    @InjectRepository(ChangeLogEntry) private readonly repo: Repository<ChangeLogEntry>,
    private readonly transactions: TransactionRunner,
    @InjectRealtimeOptions() options: RealtimeModuleOptions,
  ) {
    this.maxAgeMs = options.changeLog?.maxAgeMs ?? DAY;
    this.maxRows = options.changeLog?.maxRows ?? 1_000_000;
    this.pruneIntervalMs = options.changeLog?.pruneIntervalMs ?? 60_000;
    const dataSource = repo.manager.connection;
    const { driver } = dataSource;
    const seq = repo.metadata.findColumnWithPropertyName('seq')?.databaseName ?? 'seq';
    this.headSql = `SELECT MAX(${driver.escape(seq)}) AS ${driver.escape('max')} FROM ${tableOf(repo.metadata, driver)}`;
    this.sqliteHead = new PreparedSqlite(dataSource, this.headSql);
  }

  onModuleInit(): void {
    this.timer = setInterval(() => {
      this.prune().catch((e) =>
        this.logger.error(`change log retention failed: ${(e as Error).message}`),
      );
    }, this.pruneIntervalMs);
    this.timer.unref();
  }

  async onApplicationBootstrap(): Promise<void> {
    const narrow = await this.narrowKeys();
    if (narrow.length > 0) {
      this.logger.warn(
        `${narrow.join(' and ')} ${narrow.length > 1 ? 'are' : 'is'} 32-bit: writes fail once ` +
          `2 147 483 647 rows have been logged. Widen to bigint and register ` +
          `realtimeEntities('postgres') (README, "Upgrading").`,
      );
    }
  }

  /** The library's keys that are still 32-bit on PostgreSQL (`table.column`). */
  narrowKeys(): Promise<string[]> {
    return narrowKeys(this.repo.manager.connection, [ChangeLogEntry, AuditLog]);
  }

  onApplicationShutdown(): void {
    clearInterval(this.timer);
  }

  /** The greatest committed seq, 0 when the log is empty. */
  async head(): Promise<number> {
    const sqlite = this.sqliteHead.get();
    const rows = (sqlite ? sqlite.statement.all() : await this.repo.query(this.headSql)) as {
      max: number | string | null;
    }[];
    const max = rows[0]?.max;
    return max == null ? 0 : Number(max);
  }

  /** The smallest seq still kept, or null when the log is empty. */
  async oldest(): Promise<number | null> {
    const row = await this.repo
      .createQueryBuilder('c')
      .select('MIN(c.seq)', 'min')
      .getRawOne<{ min: number | string | null }>();
    return row?.min == null ? null : Number(row.min);
  }

  /** Changes with `after < seq < before`, in seq order. */
  async range(after: number, before: number): Promise<ChangeRecord[]> {
    const rows = await this.repo
      .createQueryBuilder('c')
      .where('c.seq > :after AND c.seq < :before', { after, before })
      .orderBy('c.seq', 'ASC')
      .getMany();
    return rows.map(toRecord);
  }

  /** Changes of one collection (and document) after `after`, up to `upTo`, in seq order. */
  async since(
    after: number,
    upTo: number,
    collection: string,
    documentId?: string,
  ): Promise<ChangeRecord[]> {
    if (after >= upTo) return [];
    const rows = await this.repo.find({
      where: {
        seq: Between(after + 1, upTo),
        collection,
        ...(documentId !== undefined ? { documentId } : {}),
      },
      order: { seq: 'ASC' },
    });
    return rows.map(toRecord);
  }

  /**
   * Applies retention: rows older than maxAge, and all but the newest maxRows. The newest
   * row always stays, so the log's head (the position of every node) survives a quiet spell.
   *
   * By age, the log is cut below its oldest row that is not older than maxAge, found by
   * walking seq order from the start (no index on `createdAt`: it would cost every commit).
   * A row's time is taken when its save is captured, its seq at commit, so times follow
   * seq order only up to the length of a transaction: a row may outlive maxAge by that
   * much; none goes sooner.
   */
  async prune(now = Date.now()): Promise<number> {
    const head = await this.head();
    const cutoff = new Date(now - this.maxAgeMs).toISOString();
    let deleted = 0;
    await this.transactions.exclusive(async () => {
      const firstKept = await this.repo
        .createQueryBuilder('c')
        .select('c.seq', 'seq')
        .where('c.createdAt >= :cutoff', { cutoff })
        .orderBy('c.seq', 'ASC')
        .limit(1)
        .getRawOne<{ seq: number | string }>();
      const bound = firstKept ? Math.min(Number(firstKept.seq), head) : head;
      const byAge = await this.repo.delete({ seq: LessThan(bound) });
      deleted += byAge.affected ?? 0;
      if (head > this.maxRows) {
        const byCount = await this.repo.delete({ seq: LessThanOrEqual(head - this.maxRows) });
        deleted += byCount.affected ?? 0;
      }
    });
    return deleted;
  }
}
