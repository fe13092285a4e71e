import { Injectable, Logger, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import type { Repository } from 'typeorm';
import { TransactionRunner } from '../notifications/transaction-runner';
import { InjectRealtimeOptions } from '../realtime.module-definition';
import type { RealtimeModuleOptions } from '../realtime.options';
import { AuditAction, AuditLog } from './audit-log.entity';

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
 * nothing. A failed flush keeps its entries for the next one.
 */
@Injectable()
export class AuditService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(AuditService.name);
  private buffer: AuditLog[] = [];
  private timer?: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private readonly maxBatch: number;
  private readonly flushIntervalMs: number;

  constructor(
    @InjectRepository(AuditLog) private readonly repo: Repository<AuditLog>,
    private readonly transactions: TransactionRunner,
    @InjectRealtimeOptions() options: RealtimeModuleOptions,
  ) {
    this.maxBatch = options.audit?.maxBatch ?? 500;
    this.flushIntervalMs = options.audit?.flushIntervalMs ?? 1000;
  }

  onModuleInit(): void {
    this.timer = setInterval(() => void this.flush(), this.flushIntervalMs);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }

  record(entry: AuditEntry): void {
    const row = new AuditLog();
    row.action = entry.action;
    row.outcome = entry.outcome ?? 'success';
    row.userId = entry.userId ?? null;
    row.connectionId = entry.connectionId ?? null;
    row.subscriptionId = entry.subscriptionId ?? null;
    row.details = entry.details ?? null;
    row.ipAddress = entry.ipAddress ? String(entry.ipAddress).slice(0, 64) : null;
    row.userAgent = entry.userAgent ? String(entry.userAgent).slice(0, 512) : null;
    row.createdAt = new Date().toISOString();
    this.buffer.push(row);
    if (this.buffer.length >= this.maxBatch) void this.flush();
  }

  /** Writes every buffered entry; resolves when they are stored. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      while (this.buffer.length > 0) {
        const batch = this.buffer.splice(0, this.maxBatch);
        try {
          await this.transactions.exclusive(() => this.repo.insert(batch as never));
        } catch (e) {
          this.buffer.unshift(...batch);
          this.logger.error(`audit flush failed, will retry: ${(e as Error).message}`);
          return;
        }
      }
    });
    return this.flushing;
  }
}
