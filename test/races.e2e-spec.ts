import { ConnectionRegistry, SubscriptionsService } from '@app/realtime';
import { DataSource } from 'typeorm';
import { Task } from '../src/tasks/task.entity';
import { describeEachDb, seedTask, startTestApp, TestApp, USERS } from './utils/app';
import { waitFor } from './utils/wait';
import { WsClient } from './utils/ws-client';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Races found in review, kept as regression tests. */
describeEachDb('races', (db) => {
  let t: TestApp;
  beforeAll(async () => (t = await startTestApp(db)));
  afterAll(() => t?.close());

  it('save() of a row another transaction deleted meanwhile publishes no phantom change', async () => {
    if (db !== 'postgres') return; // SQLite writers take turns: the race cannot happen there
    const task = await seedTask(t, { title: 'X' });
    const ws = await WsClient.open(t.ws, t.token(USERS.alice));
    const sub = await ws.subscribe({ collection: 'tasks', documentId: task.id });
    const ds = t.app.get(DataSource);
    const repo = ds.getRepository(Task);
    const stale = (await repo.findOneBy({ id: task.id })) as Task;

    // T1 deletes the row and holds its lock while a plain save() of the stale entity starts
    let deleted!: () => void;
    const removedRow = new Promise<void>((resolve) => (deleted = resolve));
    const deleting = ds.transaction(async (m) => {
      await m.remove(await m.findOneByOrFail(Task, { id: task.id }));
      deleted();
      await sleep(300);
    });
    await removedRow;
    stale.title = 'ghost';
    await Promise.all([deleting, repo.save(stale)]);

    const [removed] = await ws.waitChanges(sub, 1);
    expect(removed).toMatchObject({ event: 'removed', operation: 'delete', document: null });
    await ws.request('ping');
    expect(ws.changes(sub).map((c) => c.event)).toEqual(['removed']);
    expect(await repo.findOneBy({ id: task.id })).toBeNull();
    ws.close();
  });

  it('an SSE stream closed while its subscriptions start leaves no subscription behind', async () => {
    const subscriptions = t.app.get(SubscriptionsService);
    const connections = t.app.get(ConnectionRegistry);
    for (let i = 0; i < 30; i++) await seedTask(t);
    const params = new URLSearchParams({ access_token: t.token(USERS.alice) });
    for (let i = 0; i < 20; i++) {
      params.append('subscribe', JSON.stringify({ collection: 'tasks', includeInitialData: true }));
    }
    const abort = new AbortController();
    const res = await fetch(`${t.http}/realtime/sse?${params}`, { signal: abort.signal });
    await res.body!.getReader().read(); // connection_established
    abort.abort();
    // (earlier tests' clients are closed too, so nothing at all may remain)
    await waitFor(
      () => connections.size === 0 && subscriptions.size === 0,
      'the stream and its subscriptions to be gone',
    ).catch((e: Error) => {
      throw new Error(
        `${e.message} (connections ${connections.size}, subscriptions ${subscriptions.size})`,
      );
    });
    expect(subscriptions.size).toBe(0);
  });
});
