import { Injectable, Logger, OnModuleDestroy } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { DataSource, EntityManager, QueryRunner } from 'typeorm';
import type { Principal } from '../realtime.types';

const ACTOR = Symbol('realtime.actor');

export interface TransactionOptions {
  /**
   * Who makes the changes: recorded as each change's `actorId` (a Principal or its userId).
   * A `save(entity, { data: { actorId } })` inside overrides it for that save.
   */
  actor?: Principal | string | null;
  /**
   * Joins a transaction already open (the manager its `fn` got) instead of opening one:
   * code that opens its own transaction can be called from inside another this way.
   */
  manager?: EntityManager;
}

/** The actor of the changes being captured on this query runner, if one was named. */
export function actorOf(runner: QueryRunner | undefined): string | null | undefined {
  if (!runner) return undefined;
  const named = (runner.data as { actorId?: unknown } | undefined)?.actorId;
  if (typeof named === 'string') return named;
  return (runner as QueryRunner & { [ACTOR]?: string | null })[ACTOR];
}

/** How long a holder of the SQLite write queue may keep it before a warning is logged. */
const LONG_HOLD_MS = 10_000;

/**
 * Runs write transactions so that change capture stays correct on every driver.
 *
 * TypeORM's SQLite drivers share ONE query runner: two transactions started concurrently
 * would nest as savepoints of each other, and one's COMMIT would publish the other's
 * uncommitted changes. On SQLite this runner therefore queues transactions (and any work
 * that must not see another's uncommitted rows, such as a snapshot read) one at a time.
 * PostgreSQL gives each transaction its own connection and needs no queue.
 *
 * No AsyncLocalStorage: on Node 20 an active one makes every promise in the process pay
 * for context propagation (measured: −15 % on the ORM write path). So the actor is named
 * (`{ actor }`), and nesting is explicit (`{ manager }`): on SQLite, a `transaction()`
 * called inside another one without joining it would wait for the outer one forever; a
 * warning names that case when the queue is held for long.
 */
@Injectable()
export class TransactionRunner implements OnModuleDestroy {
  private readonly logger = new Logger(TransactionRunner.name);
  private readonly serial: boolean;
  private tail: Promise<unknown> = Promise.resolve();
  /** when the current holder of the SQLite queue took it (0: free) */
  private heldSince = 0;
  private warned = false;
  private readonly watchdog?: NodeJS.Timeout;

  constructor(@InjectDataSource() private readonly dataSource: DataSource) {
    const type = dataSource.options.type;
    this.serial = type === 'better-sqlite3' || type === 'sqlite';
    if (this.serial) {
      this.watchdog = setInterval(() => this.checkHold(), LONG_HOLD_MS / 2);
      this.watchdog.unref();
    }
  }

  onModuleDestroy(): void {
    clearInterval(this.watchdog);
  }

  get isSerial(): boolean {
    return this.serial;
  }

  /** Runs `fn` in a transaction; the changes it makes are published after commit. */
  transaction<T>(
    fn: (manager: EntityManager) => Promise<T>,
    options: TransactionOptions = {},
  ): Promise<T> {
    const { actor } = options;
    const actorId = actor == null || typeof actor === 'string' ? actor : actor.userId;
    if (options.manager) return this.withActor(options.manager, actorId, fn);
    return this.exclusive(() =>
      this.dataSource.transaction((manager) => this.withActor(manager, actorId, fn)),
    );
  }

  /**
   * Runs `fn` with the named actor on the transaction's query runner, and restores what was
   * there after (SQLite reuses one query runner for every transaction; a joined transaction
   * gets the outer one's actor back). `undefined`: no actor named, nothing changes.
   */
  private async withActor<T>(
    manager: EntityManager,
    actorId: string | null | undefined,
    fn: (manager: EntityManager) => Promise<T>,
  ): Promise<T> {
    const runner = manager.queryRunner as (QueryRunner & { [ACTOR]?: string | null }) | undefined;
    if (actorId === undefined || !runner) return fn(manager);
    const outer = runner[ACTOR];
    runner[ACTOR] = actorId;
    try {
      return await fn(manager);
    } finally {
      runner[ACTOR] = outer;
    }
  }

  /** Runs `fn` alone on SQLite (no write transaction open meanwhile); directly elsewhere. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.serial) return fn();
    const run = this.tail.then(
      () => this.held(fn),
      () => this.held(fn),
    );
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async held<T>(fn: () => Promise<T>): Promise<T> {
    this.heldSince = Date.now();
    try {
      return await fn();
    } finally {
      this.heldSince = 0;
    }
  }

  private checkHold(): void {
    if (this.heldSince === 0 || Date.now() - this.heldSince < LONG_HOLD_MS) {
      this.warned = false;
      return;
    }
    if (this.warned) return;
    this.warned = true;
    this.logger.warn(
      `a SQLite transaction has held the write queue for ${Math.round((Date.now() - this.heldSince) / 1000)} s; ` +
        'if it calls transaction() inside itself, pass { manager } to join it, and do not await exclusive() work ' +
        '(AuditService.flush, ChangeLogService.prune) inside a transaction: either waits forever',
    );
  }
}
