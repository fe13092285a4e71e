import { DataSource } from 'typeorm';
import { AuditLog, AuditService } from '@app/realtime';
import { describeEachDb, startTestApp, TestApp, USERS } from './utils/app';
import { waitFor } from './utils/wait';
import { WsClient } from './utils/ws-client';

/** One entry the database refuses must not hold back the audit log. */
describeEachDb('audit log resilience', (db) => {
  let t: TestApp;
  beforeAll(async () => (t = await startTestApp(db)));
  afterAll(() => t?.close());

  it('an entry the database refuses (NUL in a signed sub on PostgreSQL) is dropped; the others are stored', async () => {
    const audit = t.app.get(AuditService);
    // a token signed with the app's key whose sub holds a NUL character
    const odd = await WsClient.open(t.ws, t.token({ sub: 'odd\u0000user', roles: ['member'] }));
    odd.close();
    await t.api(null, 'GET', '/api/tasks', undefined, {
      authorization: 'Bearer nope',
      'user-agent': 'marker-1',
    });
    await audit.flush();
    await t.api(null, 'GET', '/api/tasks', undefined, {
      authorization: 'Bearer nope',
      'user-agent': 'marker-2',
    });
    await audit.flush();
    const r = await t.api(USERS.alice, 'GET', '/admin/audit-logs?action=auth_failed&limit=50');
    expect(r.status).toBe(200);
    const agents = r.body.items.map((x: any) => x.userAgent);
    expect(agents).toEqual(expect.arrayContaining(['marker-1', 'marker-2']));
  });

  it('entries are stored by the flush timer, with no flush call, each time the server records some', async () => {
    const stored = (agent: string) =>
      waitFor(
        async () =>
          (await t.app.get(DataSource).getRepository(AuditLog).countBy({ userAgent: agent })) > 0,
        `the audit entry of ${agent} in the database`,
      );
    // the timer runs only while entries wait: each entry after a quiet spell arms it again
    for (const agent of ['timer-1', 'timer-2']) {
      await t.api(null, 'GET', '/api/tasks', undefined, {
        authorization: 'Bearer nope',
        'user-agent': agent,
      });
      await stored(agent);
    }
  });
});
