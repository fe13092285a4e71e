import { Injectable, Logger, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { LessThan } from 'typeorm';
import { TransactionRunner } from '@app/realtime';
import { IdempotencyKey } from './idempotency-key.entity';

/** How long a create's `Idempotency-Key` answers retries. */
export const IDEMPOTENCY_KEY_TTL_MS = 24 * 3600_000;
const SWEEP_INTERVAL_MS = 3600_000;

/** Deletes `Idempotency-Key`s older than a day, once an hour. */
@Injectable()
export class IdempotencyKeySweeper implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(IdempotencyKeySweeper.name);
  private timer?: NodeJS.Timeout;

  constructor(private readonly transactions: TransactionRunner) {}

  onModuleInit(): void {
    this.timer = setInterval(() => {
      this.sweep().catch((e) =>
        this.logger.error(`idempotency key sweep failed: ${(e as Error).message}`),
      );
    }, SWEEP_INTERVAL_MS);
    this.timer.unref();
  }

  onApplicationShutdown(): void {
    clearInterval(this.timer);
  }

  /** Deletes the keys older than IDEMPOTENCY_KEY_TTL_MS before `now`; returns how many. */
  async sweep(now = Date.now()): Promise<number> {
    const before = new Date(now - IDEMPOTENCY_KEY_TTL_MS).toISOString();
    const result = await this.transactions.transaction((manager) =>
      manager.getRepository(IdempotencyKey).delete({ createdAt: LessThan(before) }),
    );
    return result.affected ?? 0;
  }
}
