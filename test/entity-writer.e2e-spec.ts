import { DataSource } from 'typeorm';
import { ChangeLogEntry, EntityWriter, StaleEntityError, TransactionRunner } from '@app/realtime';
import { IdempotencyKey } from '../src/common/idempotency-key.entity';
import { Task } from '../src/tasks/task.entity';
import { describeEachDb, seedTask, startTestApp, TestApp, USERS } from './utils/app';
import { WsClient } from './utils/ws-client';

/** EntityWriter: one plain statement per read and per update, captured as save() is. */
describeEachDb('EntityWriter', (db) => {
  let t: TestApp;
  let writer: EntityWriter;
  let runner: TransactionRunner;
  beforeAll(async () => {
    t = await startTestApp(db);
    writer = t.app.get(EntityWriter);
    runner = t.app.get(TransactionRunner);
  });
  afterAll(() => t?.close());

  const logOf = (id: string) =>
    t.app
      .get(DataSource)
      .getRepository(ChangeLogEntry)
      .find({ where: { documentId: id }, order: { seq: 'ASC' } });

  it('findOne loads what TypeORM loads; update writes the changed fields, bumps version and update date, and is captured like save()', async () => {
    const seeded = await seedTask(t, { title: 'w0', tags: ['a'], budget: 5, dueAt: null });
    // an update date in the past, so that the UPDATE's new one shows
    const old = new Date('2001-02-03T04:05:06.000Z');
    await runner.transaction((m) =>
      m.query(
        `UPDATE "tasks" SET "updatedAt" = ${db === 'postgres' ? '$1' : '?'} WHERE "id" = ${db === 'postgres' ? '$2' : '?'}`,
        [db === 'postgres' ? old : '2001-02-03 04:05:06.000', seeded.id],
      ),
    );
    const task = (await t.api(USERS.alice, 'GET', `/api/tasks/${seeded.id}`)).body;
    expect(task.updatedAt).toBe(old.toISOString());
    const c = await WsClient.open(t.ws, t.token(USERS.alice));
    const sub = await c.subscribe({
      collection: 'tasks',
      documentId: task.id,
      includeMetadata: true,
    });

    const due = new Date('2027-01-02T03:04:05.678Z');
    const saved = await runner.transaction(
      async (m) => {
        const loaded = await writer.findOne(m, Task, task.id, { lock: true });
        expect(loaded).toBeInstanceOf(Task);
        expect(loaded).toEqual(await m.getRepository(Task).findOneBy({ id: task.id }));
        // the plain path: TypeORM's save() does not run
        jest.spyOn(m, 'save').mockImplementation(() => {
          throw new Error('save() called');
        });
        return writer.update(m, loaded as Task, {
          title: 'w1',
          tags: ['a', 'b'],
          dueAt: due,
          budget: null,
          status: 'todo', // as loaded
        });
      },
      { actor: 'carol' },
    );
    expect(saved).toMatchObject({
      title: 'w1',
      tags: ['a', 'b'],
      dueAt: due,
      budget: null,
      version: task.version + 1,
    });
    expect(saved.updatedAt).toBeInstanceOf(Date);
    expect(saved.updatedAt.getTime()).toBeGreaterThan(old.getTime() + 3.1e11); // after 2011
    // the entity it returns is the row as stored
    const stored = await t.app.get(DataSource).getRepository(Task).findOneByOrFail({ id: task.id });
    expect(saved).toEqual(stored);

    const [change] = await c.waitChanges(sub, 1);
    const got = await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`);
    expect(change.document).toEqual(got.body);
    expect([...change.changedFields].sort()).toEqual(['budget', 'dueAt', 'tags', 'title']);
    expect(change.metadata.actorId).toBe('carol');
    const [, logged] = await logOf(task.id);
    expect(logged).toMatchObject({
      operation: 'update',
      actorId: 'carol',
      version: task.version + 1,
    });
    expect(logged.before).toEqual(task);
    expect(logged.after).toEqual(got.body);
    c.close();
  });

  it('changes equal to the loaded values write nothing: same version, no change', async () => {
    const due = '2027-05-06T07:08:09.000Z';
    const task = await seedTask(t, { title: 's0', tags: ['x', 'y'], dueAt: due });
    const c = await WsClient.open(t.ws, t.token(USERS.alice));
    const sub = await c.subscribe({ collection: 'tasks', documentId: task.id });
    const same = await runner.transaction(async (m) => {
      const loaded = (await writer.findOne(m, Task, task.id)) as Task;
      return writer.update(m, loaded, { title: 's0', tags: ['x', 'y'], dueAt: new Date(due) });
    });
    expect(same.version).toBe(task.version);
    expect((await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`)).body).toEqual(task);
    await c.request('ping');
    expect(c.changes(sub)).toHaveLength(0);
    expect(await logOf(task.id)).toHaveLength(1); // the insert
    c.close();
  });

  it('a row that is no longer the loaded version: StaleEntityError, nothing written or published', async () => {
    const task = await seedTask(t, { title: 'old' });
    const c = await WsClient.open(t.ws, t.token(USERS.alice));
    const sub = await c.subscribe({ collection: 'tasks', documentId: task.id });
    const stale = (await runner.transaction((m) => writer.findOne(m, Task, task.id))) as Task;
    const patched = await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, { title: 'newer' });
    expect(patched.status).toBe(200);

    const error = await runner
      .transaction((m) => writer.update(m, stale, { title: 'lost' }))
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(StaleEntityError);
    expect((error as Error).message).toMatch(/no longer version \d+.*nothing was written/);
    expect((await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`)).body).toEqual(patched.body);
    const changes = await c.waitChanges(sub, 1);
    await c.request('ping');
    expect(c.changes(sub).map((x) => x.document.title)).toEqual(['newer']);
    expect(changes).toHaveLength(1);
    c.close();
  });

  it('an update rolled back with its transaction is neither stored nor published; one it cannot write plainly goes through save()', async () => {
    const task = await seedTask(t, { title: 'r0' });
    const c = await WsClient.open(t.ws, t.token(USERS.alice));
    const sub = await c.subscribe({ collection: 'tasks', documentId: task.id });
    const failed = await runner
      .transaction(async (m) => {
        const loaded = (await writer.findOne(m, Task, task.id)) as Task;
        await writer.update(m, loaded, { title: 'rolled back' });
        throw new Error('abort');
      })
      .catch((e: Error) => e.message);
    expect(failed).toBe('abort');
    expect((await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`)).body.title).toBe('r0');

    // a property that is no column, and an entity loaded without some columns: TypeORM's
    // save() decides what to write (and reloads the row), capture follows
    let saves = 0;
    const viaSave = await runner.transaction(async (m) => {
      const save = m.save.bind(m);
      jest.spyOn(m, 'save').mockImplementation(((...args: unknown[]) => {
        saves++;
        return (save as (...a: unknown[]) => unknown)(...args);
      }) as never);
      const loaded = (await writer.findOne(m, Task, task.id)) as Task;
      await writer.update(m, loaded, { title: 'r1', notAColumn: 1 } as Partial<Task>);
      const partial = await m.getRepository(Task).findOneOrFail({
        where: { id: task.id },
        select: { id: true, title: true, version: true },
      });
      return writer.update(m, partial, { title: 'r2' });
    });
    expect(saves).toBe(2);
    expect(viaSave).toMatchObject({ title: 'r2', version: task.version + 2 });
    const changes = await c.waitChanges(sub, 2);
    expect(changes.map((x) => [x.document.title, x.changedFields])).toEqual([
      ['r1', ['title']],
      ['r2', ['title']],
    ]);
    // whole documents, as stored
    const stored = (await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`)).body;
    expect(changes[1].document).toEqual(stored);
    await c.request('ping');
    expect(c.changes(sub)).toHaveLength(2);
    c.close();
  });

  it('findOne of an entity with a composite key is refused with a message; the app goes on serving', async () => {
    const error = await runner
      .transaction((m) => writer.findOne(m, IdempotencyKey, 'alice'))
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect((error as Error).message).toMatch(
      /EntityWriter\.findOne takes one key value: IdempotencyKey has 2 primary columns \(use manager\.findOne\)/,
    );
    // the transaction it failed in rolled back, and the app goes on serving
    expect((await t.api(USERS.alice, 'GET', '/api/tasks?limit=1')).status).toBe(200);
  });

  if (db === 'postgres') {
    it('findOne { lock: true } holds the row until the transaction ends', async () => {
      const task = await seedTask(t, { title: 'l0' });
      const events: string[] = [];
      let locked!: () => void;
      const isLocked = new Promise<void>((resolve) => (locked = resolve));
      const first = runner.transaction(async (m) => {
        const row = (await writer.findOne(m, Task, task.id, { lock: true })) as Task;
        locked();
        await new Promise((resolve) => setTimeout(resolve, 300));
        await writer.update(m, row, { title: 'l1' });
        events.push('first commits');
      });
      await isLocked;
      const second = runner.transaction(async (m) => {
        const row = (await writer.findOne(m, Task, task.id, { lock: true })) as Task;
        events.push(`second loads ${row.title}`);
        return writer.update(m, row, { title: 'l2' });
      });
      await Promise.all([first, second]);
      expect(events).toEqual(['first commits', 'second loads l1']);
      expect((await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`)).body).toMatchObject({
        title: 'l2',
        version: task.version + 2,
      });
    });
  }
});
