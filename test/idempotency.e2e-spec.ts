import { DataSource } from 'typeorm';
import { IdempotencyKeySweeper } from '../src/common/idempotency-key.sweeper';
import { describeEachDb, seedTask, startTestApp, TestApp, USERS } from './utils/app';
import { waitFor } from './utils/wait';
import { WsClient } from './utils/ws-client';

/**
 * A create retried with the same `Idempotency-Key` (the client library's offline queue
 * sends its write id) makes one document, is published once, and answers each retry with
 * that document.
 */
describeEachDb('Idempotency-Key on create', (db) => {
  let t: TestApp;
  let projectId: string;
  beforeAll(async () => {
    t = await startTestApp(db);
    projectId = (await seedTask(t)).projectId as string;
  });
  afterAll(() => t?.close());

  const body = (title: string) => ({ projectId, title, department: 'eng' });
  const tasksTitled = async (title: string) => {
    const r = await t.api(USERS.alice, 'GET', `/api/tasks?projectId=${projectId}&limit=200`);
    expect(r.status).toBe(200);
    return (r.body.items as any[]).filter((d) => d.title === title);
  };

  it('a retry answers 201 with the first document; one document, one change', async () => {
    const c = await WsClient.open(t.ws, t.token(USERS.bob));
    const sub = await c.subscribe({
      collection: 'tasks',
      filters: [{ type: 'field', field: 'title', operator: 'eq', value: 'retried once' }],
    });
    const headers = { 'idempotency-key': 'op-1' };
    const first = await t.api(USERS.bob, 'POST', '/api/tasks', body('retried once'), headers);
    const second = await t.api(USERS.bob, 'POST', '/api/tasks', body('retried once'), headers);
    expect(first.status).toBe(201);
    expect(second.status).toBe(201);
    expect(second.body).toEqual(first.body);
    expect(await tasksTitled('retried once')).toHaveLength(1);
    await c.waitChanges(sub, 1);
    // a later change of another task proves nothing more was coming for this one
    const marker = await t.api(USERS.bob, 'POST', '/api/tasks', body('retried once'));
    expect(marker.status).toBe(201);
    const changes = await c.waitChanges(sub, 2);
    expect(changes.map((ch) => ch.documentId)).toEqual([first.body.id, marker.body.id]);
    c.close();
  });

  it('a retry after the document changed answers with it as it is now', async () => {
    const headers = { 'idempotency-key': 'op-2' };
    const first = await t.api(USERS.bob, 'POST', '/api/tasks', body('then edited'), headers);
    const edit = await t.api(USERS.bob, 'PATCH', `/api/tasks/${first.body.id}`, {
      status: 'doing',
      version: first.body.version,
    });
    expect(edit.status).toBe(200);
    const retry = await t.api(USERS.bob, 'POST', '/api/tasks', body('then edited'), headers);
    expect(retry.status).toBe(201);
    expect(retry.body).toMatchObject({ id: first.body.id, status: 'doing' });
  });

  it('a retry is answered before its body is checked again: the key names the request', async () => {
    const headers = { 'idempotency-key': 'op-5' };
    const first = await t.api(USERS.carol, 'POST', '/api/tasks', body('checked once'), headers);
    expect(first.status).toBe(201);
    // a body the create would now refuse (no project, another department)
    const retry = await t.api(
      USERS.carol,
      'POST',
      '/api/tasks',
      { title: 'other', department: 'sales' },
      headers,
    );
    expect(retry.status).toBe(201);
    expect(retry.body.id).toBe(first.body.id);
    expect(await tasksTitled('other')).toHaveLength(0);
  });

  it('keys are per user: the same key from another user makes its own document', async () => {
    const headers = { 'idempotency-key': 'op-shared' };
    const bob = await t.api(USERS.bob, 'POST', '/api/tasks', body('two users'), headers);
    const carol = await t.api(USERS.carol, 'POST', '/api/tasks', body('two users'), headers);
    expect([bob.status, carol.status]).toEqual([201, 201]);
    expect(carol.body.id).not.toBe(bob.body.id);
    expect(await tasksTitled('two users')).toHaveLength(2);
  });

  it('a key used for a project is refused for a task; a malformed key is refused', async () => {
    const headers = { 'idempotency-key': 'op-3' };
    const p = await t.api(USERS.bob, 'POST', '/api/projects', { name: 'P' }, headers);
    expect(p.status).toBe(201);
    const wrong = await t.api(USERS.bob, 'POST', '/api/tasks', body('wrong key'), headers);
    expect(wrong.status).toBe(400);
    expect(JSON.stringify(wrong.body)).toContain('Idempotency-Key');
    const long = await t.api(USERS.bob, 'POST', '/api/tasks', body('long key'), {
      'idempotency-key': 'x'.repeat(129),
    });
    expect(long.status).toBe(400);
    expect(await tasksTitled('wrong key')).toHaveLength(0);
    expect(await tasksTitled('long key')).toHaveLength(0);
  });

  it('a retry whose document was deleted answers 404 and makes nothing', async () => {
    const headers = { 'idempotency-key': 'op-4' };
    const first = await t.api(USERS.bob, 'POST', '/api/tasks', body('deleted later'), headers);
    const del = await t.api(USERS.bob, 'DELETE', `/api/tasks/${first.body.id}`, {
      version: first.body.version,
    });
    expect(del.status).toBe(204);
    const retry = await t.api(USERS.bob, 'POST', '/api/tasks', body('deleted later'), headers);
    expect(retry.status).toBe(404);
    expect(await tasksTitled('deleted later')).toHaveLength(0);
  });

  it('concurrent requests with one key make one document, and all answer with it', async () => {
    const headers = { 'idempotency-key': 'op-race' };
    const answers = await Promise.all(
      Array.from({ length: 6 }, () =>
        t.api(USERS.bob, 'POST', '/api/tasks', body('raced'), headers),
      ),
    );
    expect(answers.map((a) => a.status)).toEqual([201, 201, 201, 201, 201, 201]);
    expect(new Set(answers.map((a) => a.body.id)).size).toBe(1);
    expect(await tasksTitled('raced')).toHaveLength(1);
  });

  if (db === 'postgres') {
    it('PostgreSQL: a request whose key another transaction commits first rolls back and answers with that document', async () => {
      const earlier = await t.api(USERS.bob, 'POST', '/api/tasks', body('made by the winner'));
      expect(earlier.status).toBe(201);
      const ds = t.app.get(DataSource);
      // the winner: a transaction that has written the key, not yet committed
      const winner = ds.createQueryRunner();
      await winner.connect();
      await winner.startTransaction();
      await winner.query(
        `INSERT INTO "idempotency_key" ("userId", "key", "collection", "documentId", "createdAt") VALUES ($1, $2, 'tasks', $3, $4)`,
        ['bob', 'op-forced', earlier.body.id, new Date().toISOString()],
      );
      const loser = t.api(USERS.bob, 'POST', '/api/tasks', body('made by the loser'), {
        'idempotency-key': 'op-forced',
      });
      try {
        // the loser has saved its task and waits on the key's index entry
        await waitFor(
          async () =>
            Number(
              (
                await ds.query(
                  `SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%idempotency_key%'`,
                )
              )[0].n,
            ) > 0,
          'the second INSERT of the key to wait for the first',
        );
      } finally {
        await winner.commitTransaction();
        await winner.release();
      }
      const answer = await loser;
      expect(answer.status).toBe(201);
      expect(answer.body.id).toBe(earlier.body.id);
      expect(await tasksTitled('made by the loser')).toHaveLength(0);
    });
  }

  it('keys older than a day are swept; a request then makes a new document', async () => {
    const headers = { 'idempotency-key': 'op-old' };
    const first = await t.api(USERS.bob, 'POST', '/api/tasks', body('swept'), headers);
    expect(first.status).toBe(201);
    const sweeper = t.app.get(IdempotencyKeySweeper);
    expect(await sweeper.sweep(Date.now())).toBe(0);
    expect(await sweeper.sweep(Date.now() + 25 * 3600_000)).toBeGreaterThanOrEqual(1);
    const again = await t.api(USERS.bob, 'POST', '/api/tasks', body('swept'), headers);
    expect(again.status).toBe(201);
    expect(again.body.id).not.toBe(first.body.id);
    await waitFor(async () => (await tasksTitled('swept')).length === 2, 'two swept tasks');
  });
});
