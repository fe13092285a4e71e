import { DataSource } from 'typeorm';
import { ChangeCaptureBypassError, TransactionRunner } from '@app/realtime';
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
});
