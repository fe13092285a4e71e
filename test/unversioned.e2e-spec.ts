import { AbilityBuilder, createMongoAbility } from '@casl/ability';
import { Module, type INestApplication } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import jwt from 'jsonwebtoken';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import {
  Column,
  DataSource,
  DeleteDateColumn,
  Entity,
  EntitySubscriberInterface,
  PrimaryGeneratedColumn,
  QueryRunner,
} from 'typeorm';
import {
  ChangeCaptureBypassError,
  ChangeLogEntry,
  RealtimeModule,
  realtimeEntities,
  TransactionRunner,
} from '@app/realtime';
import { startOnTestAdapter } from './utils/nest-app';
import { DATABASES, createPgDatabase, postgresAvailable } from './utils/services';
import { WsClient } from './utils/ws-client';

/** A registered entity without a @VersionColumn. */
@Entity('memos')
class Memo {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: 'varchar', length: 100 })
  text: string;

  @Column({ type: 'varchar', length: 100, default: '' })
  extra: string;
}

/** A registered entity with soft delete. */
@Entity('stickers')
class Sticker {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: 'varchar', length: 100 })
  label: string;

  @DeleteDateColumn()
  deletedAt: Date | null;
}

/** An entity of the app that is not a collection. */
@Entity('counters')
class Counter {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: 'integer', default: 0 })
  value: number;
}

const SECRET = 'unversioned-fixture-secret-0123456789';

async function startMemosApp(db: 'sqlite' | 'postgres') {
  let url: string | undefined;
  let drop = async () => undefined as unknown;
  const dir = mkdtempSync(join(tmpdir(), 'rt-memos-'));
  if (db === 'postgres') ({ url, drop } = await createPgDatabase());
  const type = db === 'postgres' ? 'postgres' : 'better-sqlite3';

  @Module({
    imports: [
      TypeOrmModule.forRoot({
        ...(db === 'postgres'
          ? { type: 'postgres' as const, url }
          : { type: 'better-sqlite3' as const, database: join(dir, 'memos.sqlite') }),
        entities: [Memo, Sticker, Counter, ...realtimeEntities(type)],
        synchronize: true,
      }),
      RealtimeModule.forRoot({
        auth: { secret: SECRET },
        collections: [
          { name: 'memos', entity: Memo },
          { name: 'stickers', entity: Sticker },
        ],
        abilityFactory: () => {
          const { can, build } = new AbilityBuilder(createMongoAbility);
          can('read', 'memos');
          can('read', 'stickers');
          return build();
        },
      }),
    ],
  })
  class MemosModule {}

  const app = await startOnTestAdapter(MemosModule);
  const port = (app.getHttpServer().address() as AddressInfo).port;
  return {
    app,
    ws: `ws://127.0.0.1:${port}/realtime/ws`,
    token: jwt.sign({ sub: 'reader' }, SECRET, { expiresIn: 600 }),
    async close() {
      await app.close();
      await drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A memo saved through the app's TransactionRunner, with the runner and the DataSource. */
async function savedMemo(m: { app: INestApplication }, fields: Partial<Memo>) {
  const runner = m.app.get(TransactionRunner);
  const ds = m.app.get(DataSource);
  const memo = await runner.transaction((tx) => tx.getRepository(Memo).save(fields));
  return { runner, ds, memo };
}

describe.each(DATABASES)(
  "collections unlike the sample app's (unversioned, soft delete) [%s]",
  (db) => {
    let m: Awaited<ReturnType<typeof startMemosApp>> | undefined;
    const clients: WsClient[] = [];

    beforeAll(async () => {
      if (db === 'postgres' && !(await postgresAvailable())) {
        console.warn(
          '!!! SKIPPING "collections unlike the sample app\'s" on PostgreSQL: unreachable',
        );
        return;
      }
      m = await startMemosApp(db);
    });
    afterEach(() => clients.splice(0).forEach((c) => c.close()));
    afterAll(() => m?.close());

    it('QueryBuilder and repository updates of it are refused and change nothing; those of an entity that is no collection run', async () => {
      if (!m) return;
      const { runner, ds, memo } = await savedMemo(m, { text: 'kept', extra: '' });
      const attempts: [string, () => Promise<unknown>][] = [
        ['repository.update', () => ds.getRepository(Memo).update(memo.id, { text: 'lost' })],
        ['repository.increment', () => ds.getRepository(Memo).increment({ id: memo.id }, 'id', 1)],
        [
          'QueryBuilder.update in a transaction',
          () =>
            runner.transaction((tx) =>
              tx.createQueryBuilder().update(Memo).set({ text: 'lost' }).execute(),
            ),
        ],
      ];
      for (const [name, attempt] of attempts) {
        const error = await attempt().then(
          () => null,
          (e: unknown) => e,
        );
        expect([name, error instanceof ChangeCaptureBypassError]).toEqual([name, true]);
      }
      expect(await ds.getRepository(Memo).findOneByOrFail({ id: memo.id })).toEqual(memo);

      const counter = await ds.getRepository(Counter).save({ value: 1 });
      await ds.getRepository(Counter).increment({ id: counter.id }, 'value', 2);
      await ds.createQueryBuilder().update(Counter).set({ value: 10 }).where('value = 3').execute();
      expect(await ds.getRepository(Counter).findOneByOrFail({ id: counter.id })).toEqual({
        id: counter.id,
        value: 10,
      });
    });

    it('save() of a stale copy: the logged before-image is the row as committed (a write that bypassed capture included), the change is delivered once; PostgreSQL reads the row under its lock first', async () => {
      if (!m) return;
      const { runner, ds, memo } = await savedMemo(m, { text: 'a', extra: 'x' });
      const c = await WsClient.open(m.ws, m.token);
      clients.push(c);
      const sub = await c.subscribe({ collection: 'memos', documentId: String(memo.id) });

      const seen: string[] = [];
      let watched: QueryRunner | undefined;
      const watcher: EntitySubscriberInterface = {
        beforeQuery: (event) => {
          if (event.queryRunner === watched) seen.push(event.query.replace(/\s+/g, ' '));
        },
      };
      ds.subscribers.push(watcher);
      try {
        await runner.transaction(async (tx) => {
          watched = tx.queryRunner;
          const stale = await tx.getRepository(Memo).findOneByOrFail({ id: memo.id });
          // another writer, bypassing capture, commits meanwhile (on SQLite: in this
          // transaction, the only connection there is)
          await (db === 'postgres' ? ds : tx).query(
            `UPDATE memos SET extra = 'y' WHERE id = ${memo.id}`,
          );
          stale.text = 'b';
          await tx.getRepository(Memo).save(stale);
        });
      } finally {
        ds.subscribers.splice(ds.subscribers.indexOf(watcher), 1);
      }

      const [change] = await c.waitChanges(sub, 1);
      expect(change).toMatchObject({
        operation: 'update',
        document: { id: memo.id, text: 'b', extra: 'x' },
      });
      expect([...change.changedFields].sort()).toEqual(['extra', 'text']);
      const [logged] = (
        await ds.getRepository(ChangeLogEntry).find({ order: { seq: 'DESC' }, take: 1 })
      ).slice(-1);
      expect(logged).toMatchObject({
        operation: 'update',
        before: { id: memo.id, text: 'a', extra: 'y' },
        after: { id: memo.id, text: 'b', extra: 'x' },
      });
      await c.request('ping');
      expect(c.changes(sub)).toHaveLength(1);

      const update = seen.findIndex((q) => /^UPDATE "memos"/.test(q));
      const locked = seen.findIndex((q) => /FROM "memos".* FOR UPDATE/.test(q));
      expect(update).toBeGreaterThanOrEqual(0);
      if (db === 'postgres') {
        expect(locked).toBeGreaterThanOrEqual(0);
        expect(locked).toBeLessThan(update);
      } else {
        expect(locked).toBe(-1);
      }
    });

    it('a soft-deletable collection: softRemove and recover are delivered as delete and insert; QueryBuilder softDelete and restore are refused and change nothing', async () => {
      if (!m) return;
      const runner = m.app.get(TransactionRunner);
      const ds = m.app.get(DataSource);
      const repo = ds.getRepository(Sticker);
      const sticker = await runner.transaction((tx) =>
        tx.getRepository(Sticker).save({ label: 'kept' }),
      );
      const c = await WsClient.open(m.ws, m.token);
      clients.push(c);
      const sub = await c.subscribe({ collection: 'stickers', documentId: String(sticker.id) });

      await runner.transaction((tx) => tx.getRepository(Sticker).softRemove(sticker));
      const [removed] = await c.waitChanges(sub, 1);
      expect(removed).toMatchObject({ operation: 'delete', event: 'removed', document: null });
      const refusedRestore = await repo.restore(sticker.id).then(
        () => null,
        (e: unknown) => e,
      );
      expect(refusedRestore).toBeInstanceOf(ChangeCaptureBypassError);
      expect((refusedRestore as Error).message).toContain('repository.restore()');
      expect(
        (await repo.findOne({ where: { id: sticker.id }, withDeleted: true }))?.deletedAt,
      ).not.toBeNull();

      // by its key alone: the rest of the document comes from the row
      await runner.transaction((tx) => tx.getRepository(Sticker).recover({ id: sticker.id }));
      const [, added] = await c.waitChanges(sub, 2);
      expect(added).toMatchObject({
        operation: 'insert',
        event: 'added',
        document: { id: sticker.id, label: 'kept', deletedAt: null },
      });
      const refusedSoftDelete = await repo.softDelete(sticker.id).then(
        () => null,
        (e: unknown) => e,
      );
      expect(refusedSoftDelete).toBeInstanceOf(ChangeCaptureBypassError);
      expect((refusedSoftDelete as Error).message).toContain('repository.softDelete()');
      expect((await repo.findOneByOrFail({ id: sticker.id })).deletedAt).toBeNull();

      await c.request('ping');
      expect(c.changes(sub)).toHaveLength(2);
    });
  },
);
