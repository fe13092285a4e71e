import { Injectable } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import { AsyncLocalStorage } from 'node:async_hooks';
import type { DataSource, EntityManager } from 'typeorm';

/**
 * Runs write transactions so that change capture stays correct on every driver.
 *
 * TypeORM's SQLite drivers share ONE query runner: two transactions started concurrently
 * would nest as savepoints of each other, and one's COMMIT would publish the other's
 * uncommitted changes. On SQLite this runner therefore queues transactions (and any work
 * that must not see another's uncommitted rows, such as a snapshot read) one at a time.
 * PostgreSQL gives each transaction its own connection and needs no queue.
 */
@Injectable()
export class TransactionRunner {
  private readonly serial: boolean;
  private tail: Promise<unknown> = Promise.resolve();
  private readonly inside = new AsyncLocalStorage<EntityManager>();

  constructor(@InjectDataSource() private readonly dataSource: DataSource) {
    const type = dataSource.options.type;
    this.serial = type === 'better-sqlite3' || type === 'sqlite';
  }

  get isSerial(): boolean {
    return this.serial;
  }

  /** Runs `fn` in a transaction; the changes it makes are published after commit. */
  transaction<T>(fn: (manager: EntityManager) => Promise<T>): Promise<T> {
    const current = this.inside.getStore();
    if (current) return fn(current);
    return this.exclusive(() =>
      this.dataSource.transaction((manager) => this.inside.run(manager, () => fn(manager))),
    );
  }

  /** Runs `fn` alone on SQLite (no transaction of another caller is open meanwhile). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.serial || this.inside.getStore()) return fn();
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
