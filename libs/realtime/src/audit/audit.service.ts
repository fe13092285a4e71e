import { Injectable, Logger, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { InjectDataSource, InjectRepository } from '@nestjs/typeorm';
import { LessThan, type DataSource, type Repository } from 'typeorm';
import { PreparedSqlite } from '../common/sqlite-handle';
import { TransactionRunner } from '../notifications/transaction-runner';
import { InjectRealtimeOptions } from '../realtime.module-definition';
import type { RealtimeModuleOptions } from '../realtime.options';
import { AuditAction, AuditLog } from './audit-log.entity';

const MAX_DEPTH = 8;
const MAX_ITEMS = 50;
const MAX_STRING = 1000;
/** entries deleted per statement by the retention: a short write each, well under SQLite's bound on parameters */
const PRUNE_BATCH = 5000;

const SQLITE_INSERT = `INSERT INTO "audit_logs" ("action", "userId", "connectionId", "subscriptionId", "outcome", "details", "ipAddress", "userAgent", "createdAt") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`;

/**
 * A copy of `details` small and shallow enough to store: they carry client input (a refused
 * query), and one hostile frame must neither bloat the table nor make a batch unstorable
 * (a 3 000-deep object overflows the stack in the ORM, and the failed batch would be
 * retried forever, blocking every later entry).
 */
function bounded(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') {
    return value.length > MAX_STRING ? `${value.slice(0, MAX_STRING)}…` : value;
  }
  if (typeof value === 'bigint') return String(value);
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Date) return value.toISOString();
  if (depth >= MAX_DEPTH) return '…';
  if (Array.isArray(value)) {
    const items = value.slice(0, MAX_ITEMS).map((v) => bounded(v, depth + 1));
    if (value.length > MAX_ITEMS) items.push(`… ${value.length - MAX_ITEMS} more`);
    return items;
  }
  const out: Record<string, unknown> = {};
  const entries = Object.entries(value);
  for (const [key, v] of entries.slice(0, MAX_ITEMS)) {
    // defineProperty: a key named __proto__ stays a plain key
    Object.defineProperty(out, key.slice(0, 100), {
      value: bounded(v, depth + 1),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  if (entries.length > MAX_ITEMS) out['…'] = `${entries.length - MAX_ITEMS} more`;
  return out;
}

export interface AuditEntry {
  action: AuditAction;
  outcome?: 'success' | 'failure';
  userId?: string | null;
  connectionId?: string | null;
  subscriptionId?: string | null;
  details?: Record<string, unknown> | null;
  ipAddress?: string | null;
  userAgent?: string | null;
}

/**
 * Records audit entries off the request path: `record()` only buffers; a timer and a full
 * buffer flush in batches, and shutdown flushes what is left, so a graceful stop loses
 * nothing. A failed flush keeps its entries for the next one. The timer runs only while
 * entries wait: an idle server is not woken every second for nothing.
 */
@Injectable()
export class AuditService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(AuditService.name);
  private buffer: AuditLog[] = [];
  private timer?: NodeJS.Timeout;
  /** shut down: the last flush has been asked for, no timer is armed again */
  private closed = false;
  private flushing: Promise<void> = Promise.resolve();
  private readonly maxBatch: number;
  private readonly flushIntervalMs: number;
  private readonly sqliteInsert: PreparedSqlite;
  private readonly maxAgeMs?: number;
  private readonly pruneIntervalMs: number;
  private pruneTimer?: NodeJS.Timeout;

  constructor(
    @InjectRepository(AuditLog) private readonly repo: Repository<AuditLog>,
    private readonly transactions: TransactionRunner,
    @InjectRealtimeOptions() options: RealtimeModuleOptions,
    @InjectDataSource() dataSource: DataSource,
  ) {
    this.maxBatch = options.audit?.maxBatch ?? 500;
    this.flushIntervalMs = options.audit?.flushIntervalMs ?? 1000;
    this.sqliteInsert = new PreparedSqlite(dataSource, SQLITE_INSERT);
    this.maxAgeMs = options.audit?.maxAgeMs;
    this.pruneIntervalMs = options.audit?.pruneIntervalMs ?? 3_600_000;
  }

  onModuleInit(): void {
    if (this.maxAgeMs === undefined) return;
    this.pruneTimer = setInterval(() => {
      this.prune().catch((e) =>
        this.logger.error(`audit log retention failed: ${(e as Error).message}`),
      );
    }, this.pruneIntervalMs);
    this.pruneTimer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.pruneTimer);
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  /** Flushes within flushIntervalMs, unless a flush is due already (or the app is closing). */
  private schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.flushIntervalMs);
    this.timer.unref();
  }

  record(entry: AuditEntry): void {
    const row = new AuditLog();
    row.action = entry.action;
    row.outcome = entry.outcome ?? 'success';
    row.userId = entry.userId ?? null;
    row.connectionId = entry.connectionId ?? null;
    row.subscriptionId = entry.subscriptionId ?? null;
    row.details = entry.details ? (bounded(entry.details) as Record<string, unknown>) : null;
    row.ipAddress = entry.ipAddress ? String(entry.ipAddress).slice(0, 64) : null;
    row.userAgent = entry.userAgent ? String(entry.userAgent).slice(0, 512) : null;
    row.createdAt = new Date().toISOString();
    this.buffer.push(row);
    if (this.buffer.length >= this.maxBatch) void this.flush();
    else this.schedule();
  }

  /**
   * After a batch failed: stores its entries one by one, so that one entry the database
   * refuses (say, a NUL character in a token's `sub` on PostgreSQL) cannot hold back every
   * later one. That entry is logged and dropped. Returns false when no entry could be
   * stored (the database is down), and then stores nothing.
   */
  private async storeOneByOne(batch: AuditLog[]): Promise<boolean> {
    let stored = 0;
    const refused: { entry: AuditLog; error: Error }[] = [];
    for (const entry of batch) {
      try {
        await this.insert([entry]);
        stored++;
      } catch (e) {
        refused.push({ entry, error: e as Error });
        // the first three refused and none stored: the database is failing, not the entries
        if (stored === 0 && refused.length === 3) return false;
      }
    }
    if (stored === 0) return false;
    for (const { entry, error } of refused) {
      this.logger.error(
        `audit entry refused by the database, dropped: ${error.message} ${JSON.stringify({ action: entry.action, userId: entry.userId, connectionId: entry.connectionId })}`,
      );
    }
    return true;
  }

  /**
   * Stores entries, all or none. better-sqlite3: one prepared statement run per entry in
   * one transaction (TypeORM's insert builds a statement of 500 rows × 9 values through its
   * query builder: measured as most of the server's CPU for a second after 1 000 clients
   * connect). Elsewhere: the repository's multi-row insert.
   */
  private insert(entries: AuditLog[]): Promise<unknown> {
    return this.transactions.exclusive(async () => {
      const sqlite = this.sqliteInsert.get();
      if (!sqlite) return this.repo.insert(entries as never);
      const { db, statement } = sqlite;
      db.transaction(() => {
        for (const e of entries) {
          statement.run(
            e.action,
            e.userId,
            e.connectionId,
            e.subscriptionId,
            e.outcome,
            e.details === null ? null : JSON.stringify(e.details),
            e.ipAddress,
            e.userAgent,
            e.createdAt,
          );
        }
      })();
    });
  }

  /**
   * Deletes the entries recorded before `now - audit.maxAgeMs` (nothing when it is unset),
   * PRUNE_BATCH at a time, each batch a write of its own (on SQLite in its turn among the
   * other writers, so that the first prune of a large table does not hold them all up).
   * Returns how many went.
   */
  async prune(now = Date.now()): Promise<number> {
    if (this.maxAgeMs === undefined) return 0;
    const cutoff = new Date(now - this.maxAgeMs).toISOString();
    let deleted = 0;
    for (;;) {
      const count = await this.transactions.exclusive(async () => {
        const old = await this.repo.find({
          select: { id: true },
          where: { createdAt: LessThan(cutoff) },
          order: { id: 'ASC' },
          take: PRUNE_BATCH,
        });
        if (old.length > 0) await this.repo.delete(old.map((row) => row.id));
        return old.length;
      });
      deleted += count;
      if (count < PRUNE_BATCH) return deleted;
    }
  }

  /** Writes every buffered entry; resolves when they are stored. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      while (this.buffer.length > 0) {
        const batch = this.buffer.splice(0, this.maxBatch);
        try {
          await this.insert(batch);
        } catch (e) {
          if (!(await this.storeOneByOne(batch))) {
            // the database itself is failing: keep everything for the next flush
            this.buffer.unshift(...batch);
            this.logger.error(`audit flush failed, will retry: ${(e as Error).message}`);
            this.schedule();
            return;
          }
        }
      }
    });
    return this.flushing;
  }
}
