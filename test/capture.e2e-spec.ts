import { DataSource, EntityManager, SaveOptions } from 'typeorm';
import {
  ChangeCaptureBypassError,
  ChangeLogEntry,
  ChangeLogService,
  TransactionRunner,
} from '@app/realtime';
import { Task } from '../src/tasks/task.entity';
import { describeEachDb, seedTask, startTestApp, TestApp, USERS } from './utils/app';
import { WsClient } from './utils/ws-client';

/** Writes that would bypass change capture are refused before they run, never missed. */
describeEachDb('change capture refuses bypassing writes', (db) => {
  let t: TestApp;
  beforeAll(async () => (t = await startTestApp(db)));
  afterAll(() => t?.close());

  it('repository.update / QueryBuilder.update / repository.delete / QueryBuilder.delete throw ChangeCaptureBypassError and change nothing', async () => {
    const task = await seedTask(t, { title: 'kept' });
    const c = await WsClient.open(t.ws, t.token(USERS.alice));
    const sub = await c.subscribe({ collection: 'tasks', documentId: task.id });
    const runner = t.app.get(TransactionRunner);
    const ds = t.app.get(DataSource);

    const attempts: [string, () => Promise<unknown>][] = [
      [
        'repository.update',
        () => runner.transaction((m) => m.getRepository(Task).update(task.id, { title: 'lost' })),
      ],
      [
        'QueryBuilder.update',
        () =>
          runner.transaction((m) =>
            m
              .createQueryBuilder()
              .update(Task)
              .set({ title: 'lost' })
              .where('id = :id', { id: task.id })
              .execute(),
          ),
      ],
      ['repository.delete', () => runner.transaction((m) => m.getRepository(Task).delete(task.id))],
      [
        'QueryBuilder.delete',
        () =>
          ds.createQueryBuilder().delete().from(Task).where('id = :id', { id: task.id }).execute(),
      ],
    ];
    for (const [name, attempt] of attempts) {
      const error = await attempt().then(
        () => null,
        (e: unknown) => e,
      );
      expect([name, error instanceof ChangeCaptureBypassError]).toEqual([name, true]);
      expect((error as Error).message).toMatch(
        /bypasses change capture; use repository\.save\(\)\/remove\(\)/,
      );
    }
    const still = await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`);
    expect(still.body).toMatchObject({ title: 'kept', version: task.version });

    // a captured write afterwards is the first and only change the subscriber sees
    await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, { title: 'saved' });
    const [change] = await c.waitChanges(sub, 1);
    expect(change).toMatchObject({
      operation: 'update',
      document: { title: 'saved' },
      changedFields: ['title'],
    });
    await c.request('ping');
    expect(c.changes(sub)).toHaveLength(1);
    c.close();
  });

  it('the change log head is the greatest committed seq: a commit moves it, a rollback does not', async () => {
    const log = t.app.get(ChangeLogService);
    const runner = t.app.get(TransactionRunner);
    const greatest = async () => {
      const row = await t.app
        .get(DataSource)
        .getRepository(ChangeLogEntry)
        .createQueryBuilder('c')
        .select('MAX(c.seq)', 'max')
        .getRawOne<{ max: number | string | null }>();
      return Number(row?.max ?? 0);
    };
    const before = await log.head();
    expect(before).toBe(await greatest());
    const task = await seedTask(t, { title: 'head' });
    const after = await log.head();
    expect(after).toBeGreaterThan(before);
    expect(after).toBe(await greatest());
    await expect(
      runner.transaction(async (m) => {
        const row = await m.getRepository(Task).findOneByOrFail({ id: task.id });
        row.title = 'rolled back';
        await m.save(row);
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await log.head()).toBe(after);
  });

  it('a PATCH answers with the version and update date it wrote, as the change and the row have them; a PATCH that changes nothing writes nothing', async () => {
    const task = await seedTask(t, { title: 'v0' });
    const c = await WsClient.open(t.ws, t.token(USERS.alice));
    const sub = await c.subscribe({ collection: 'tasks', documentId: task.id });
    const res = await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, {
      title: 'v1',
      version: task.version,
    });
    expect(res.status).toBe(200);
    expect(res.body.version).toBe(task.version + 1);
    expect(Date.parse(res.body.updatedAt)).toBeGreaterThanOrEqual(Date.parse(task.updatedAt));
    const [change] = await c.waitChanges(sub, 1);
    expect(change.document).toEqual(res.body);
    expect((await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`)).body).toEqual(res.body);

    // the same title again: no UPDATE, so no new version, no change
    const same = await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, { title: 'v1' });
    expect(same.body).toEqual(res.body);
    await c.request('ping');
    expect(c.changes(sub)).toHaveLength(1);
    c.close();
  });

  it('records the actor the writer names, and { manager } joins the open transaction', async () => {
    const task = await seedTask(t, { title: 't0' });
    const c = await WsClient.open(t.ws, t.token(USERS.alice));
    const sub = await c.subscribe({
      collection: 'tasks',
      documentId: task.id,
      includeMetadata: true,
    });
    const runner = t.app.get(TransactionRunner);
    const edit = async (m: EntityManager, title: string, options?: SaveOptions) => {
      const repo = m.getRepository(Task);
      const row = await repo.findOneByOrFail({ id: task.id });
      row.title = title;
      await repo.save(row, options);
    };
    await runner.transaction((m) => edit(m, 't1'), { actor: 'carol' });
    await runner.transaction((m) => edit(m, 't2', { data: { actorId: 'dave' } }), {
      actor: 'carol',
    });
    // an actorId that is not a string is no actor: the transaction's one stands
    await runner.transaction((m) => edit(m, 't2b', { data: { actorId: 42 } }), {
      actor: 'carol',
    });
    await runner.transaction((m) => edit(m, 't3'));
    await runner.transaction(
      async (m) => {
        // code that opens its own transaction, called inside this one, joins it: on SQLite
        // it would otherwise wait for this one forever
        await runner.transaction((inner) => edit(inner, 't4'), { manager: m });
        await runner.transaction((inner) => edit(inner, 't4b'), { manager: m, actor: 'frank' });
        await c.request('ping');
        expect(c.changes(sub)).toHaveLength(4); // nothing of this transaction before COMMIT
        await edit(m, 't5');
      },
      { actor: USERS.erin.sub },
    );
    const changes = await c.waitChanges(sub, 7);
    expect(changes.map((x) => [x.document.title, x.metadata.actorId])).toEqual([
      ['t1', 'carol'],
      ['t2', 'dave'],
      ['t2b', 'carol'],
      ['t3', null],
      ['t4', 'erin'],
      ['t4b', 'frank'],
      ['t5', 'erin'],
    ]);
    c.close();
  });
});
