import { DataSource } from 'typeorm';
import { AuditLog, AuditService } from '@app/realtime';
import { auditItems, describeEachDb, startTestApp, TestApp, USERS } from './utils/app';
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

describeEachDb('audit log retention', (db) => {
  const HOUR = 3_600_000;
  let kept: TestApp;
  let pruned: TestApp;
  beforeAll(async () => {
    kept = await startTestApp(db);
    pruned = await startTestApp(db, { AUDIT_MAX_AGE_MS: String(HOUR) });
  });
  afterAll(async () => {
    await kept?.close();
    await pruned?.close();
  });

  /** An `auth_failed` entry marked by its user agent, stored. */
  const refusedRequest = async (t: TestApp, agent: string) => {
    await t.api(null, 'GET', '/api/tasks', undefined, {
      authorization: 'Bearer nope',
      'user-agent': agent,
    });
    await t.app.get(AuditService).flush();
  };
  const agentsOf = async (t: TestApp): Promise<string[]> =>
    (await auditItems(t, 'action=auth_failed')).map((x) => x.userAgent);

  it('AUDIT_MAX_AGE_MS: the entries older than it go, the younger stay (as the audit API shows them)', async () => {
    await refusedRequest(pruned, 'old-1');
    await refusedRequest(pruned, 'old-2');
    await new Promise((resolve) => setTimeout(resolve, 5));
    const cutoff = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 5));
    await refusedRequest(pruned, 'young');
    expect(await agentsOf(pruned)).toEqual(expect.arrayContaining(['old-1', 'old-2', 'young']));

    // an hour on, as the retention timer would run it then
    const deleted = await pruned.app.get(AuditService).prune(cutoff + HOUR);
    expect(deleted).toBeGreaterThanOrEqual(2);
    const agents = await agentsOf(pruned);
    expect(agents).toContain('young');
    expect(agents).not.toContain('old-1');
    expect(agents).not.toContain('old-2');
    const rest = await pruned.app.get(DataSource).getRepository(AuditLog).find();
    expect(rest.every((x) => x.createdAt >= new Date(cutoff).toISOString())).toBe(true);
  });

  it('a backlog of more entries than one batch deletes (5 000) goes in several', async () => {
    const repo = pruned.app.get(DataSource).getRepository(AuditLog);
    const createdAt = new Date(Date.now() - 2 * HOUR).toISOString();
    for (let i = 0; i < 12; i++) {
      await repo.insert(
        Array.from({ length: 500 }, () => ({
          action: 'auth_failed',
          outcome: 'failure',
          createdAt,
        })),
      );
    }
    await refusedRequest(pruned, 'recent');
    expect(await repo.countBy({ createdAt })).toBe(6000);
    expect(await pruned.app.get(AuditService).prune()).toBeGreaterThanOrEqual(6000);
    expect(await repo.countBy({ createdAt })).toBe(0);
    expect(await agentsOf(pruned)).toContain('recent');
  });

  it('without AUDIT_MAX_AGE_MS the audit log is kept whole', async () => {
    await refusedRequest(kept, 'ancient');
    const repo = kept.app.get(DataSource).getRepository(AuditLog);
    const before = await repo.count();
    expect(await kept.app.get(AuditService).prune(Date.now() + 100 * 365 * 24 * HOUR)).toBe(0);
    expect(await repo.count()).toBe(before);
    expect(await agentsOf(kept)).toContain('ancient');
  });
});
