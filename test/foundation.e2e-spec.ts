import jwt from 'jsonwebtoken';
import { gzipSync } from 'node:zlib';
import { describeEachDb, seedTask, startTestApp, TestApp, USERS } from './utils/app';

/** Issue 2: REST, policies, concurrency, validation, authentication and the audit log. */
describeEachDb('foundation', (db) => {
  let t: TestApp;
  let engTask: Record<string, any>;
  let salesTask: Record<string, any>;

  beforeAll(async () => {
    t = await startTestApp(db);
    engTask = await seedTask(t, { department: 'eng', budget: 1200, assigneeId: 'carol' });
    salesTask = await seedTask(t, { department: 'sales', budget: 90 });
  });
  afterAll(() => t?.close());

  it('serves /health with the database up', async () => {
    const r = await t.api(null, 'GET', '/health');
    expect(r.status).toBe(200);
    expect(r.body.info.database.status).toBe('up');
  });

  it('describes the REST API in OpenAPI at /docs', async () => {
    const r = await t.api(null, 'GET', '/docs-json');
    expect(r.status).toBe(200);
    expect(Object.keys(r.body.paths)).toEqual(
      expect.arrayContaining([
        '/api/tasks',
        '/api/tasks/{id}',
        '/api/projects',
        '/admin/audit-logs',
        '/auth/login',
      ]),
    );
    expect((await fetch(`${t.http}/docs`)).status).toBe(200);
  });

  it('logs in demo users and refuses wrong passwords', async () => {
    const ok = await t.api(null, 'POST', '/auth/login', {
      username: 'bob',
      password: 'bob-password',
    });
    expect(ok.status).toBe(200);
    expect(ok.body.expiresIn).toBeGreaterThan(0);
    const claims = jwt.decode(ok.body.accessToken) as Record<string, any>;
    expect(claims).toMatchObject({ sub: 'bob', roles: ['manager'], attrs: { department: 'eng' } });
    const bad = await t.api(null, 'POST', '/auth/login', { username: 'bob', password: 'nope' });
    expect(bad.status).toBe(401);
    const withToken = await t.api(null, 'GET', '/api/tasks', undefined, {
      authorization: `Bearer ${ok.body.accessToken}`,
    });
    expect(withToken.status).toBe(200);
  });

  describe('policies', () => {
    it('admin reads every task with budget', async () => {
      const r = await t.api(USERS.alice, 'GET', '/api/tasks');
      expect(r.status).toBe(200);
      const ids = r.body.items.map((x: any) => x.id);
      expect(ids).toEqual(expect.arrayContaining([engTask.id, salesTask.id]));
      expect(r.body.items.find((x: any) => x.id === engTask.id).budget).toBe(1200);
    });

    it('manager reads its own department with budget, not another', async () => {
      const r = await t.api(USERS.bob, 'GET', '/api/tasks');
      expect(r.body.items.every((x: any) => x.department === 'eng')).toBe(true);
      expect(r.body.items.find((x: any) => x.id === engTask.id).budget).toBe(1200);
      expect((await t.api(USERS.bob, 'GET', `/api/tasks/${salesTask.id}`)).status).toBe(404);
      const moved = await t.api(USERS.bob, 'PATCH', `/api/tasks/${engTask.id}`, { priority: 4 });
      expect(moved.status).toBe(200);
      expect(moved.body.priority).toBe(4);
      engTask = moved.body;
    });

    it('member reads its own department without budget', async () => {
      const list = await t.api(USERS.carol, 'GET', '/api/tasks');
      expect(list.status).toBe(200);
      expect(list.body.items.length).toBeGreaterThan(0);
      for (const item of list.body.items) {
        expect(item.department).toBe('eng');
        expect(item).not.toHaveProperty('budget');
      }
      const one = await t.api(USERS.carol, 'GET', `/api/tasks/${engTask.id}`);
      expect(one.status).toBe(200);
      expect(one.body).not.toHaveProperty('budget');
      expect(one.body.title).toBe(engTask.title);
    });

    it('another department is 404 for reads and writes (existence is not revealed)', async () => {
      expect((await t.api(USERS.dave, 'GET', `/api/tasks/${engTask.id}`)).status).toBe(404);
      expect(
        (await t.api(USERS.dave, 'PATCH', `/api/tasks/${engTask.id}`, { title: 'x' })).status,
      ).toBe(404);
      expect((await t.api(USERS.dave, 'DELETE', `/api/tasks/${engTask.id}`)).status).toBe(404);
    });

    it('member updates tasks it is assigned to or owns, and nothing else (403)', async () => {
      const assigned = await t.api(USERS.carol, 'PATCH', `/api/tasks/${engTask.id}`, {
        status: 'doing',
      });
      expect(assigned.status).toBe(200);
      engTask = (await t.api(USERS.alice, 'GET', `/api/tasks/${engTask.id}`)).body;
      const other = await seedTask(t, { department: 'eng', assigneeId: 'bob' });
      const refused = await t.api(USERS.carol, 'PATCH', `/api/tasks/${other.id}`, {
        status: 'done',
      });
      expect(refused.status).toBe(403);
      expect(refused.body.code).toBe('forbidden');
      const budget = await t.api(USERS.carol, 'PATCH', `/api/tasks/${engTask.id}`, { budget: 5 });
      expect(budget.status).toBe(403);
    });

    it('member creates tasks in its own department only, and owns them', async () => {
      const own = await t.api(USERS.carol, 'POST', '/api/tasks', {
        projectId: engTask.projectId,
        title: 'mine',
      });
      expect(own.status).toBe(201);
      expect(own.body).toMatchObject({
        ownerId: 'carol',
        department: 'eng',
        title: 'mine',
        version: 1,
      });
      expect(own.body).not.toHaveProperty('budget');
      const edit = await t.api(USERS.carol, 'PATCH', `/api/tasks/${own.body.id}`, {
        title: 'mine too',
      });
      expect(edit.status).toBe(200);
      const elsewhere = await t.api(USERS.carol, 'POST', '/api/tasks', {
        projectId: engTask.projectId,
        title: 'x',
        department: 'sales',
      });
      expect(elsewhere.status).toBe(403);
      expect((await t.api(USERS.carol, 'DELETE', `/api/tasks/${own.body.id}`)).status).toBe(403);
    });

    it('members do not create projects; managers do, in their department', async () => {
      expect((await t.api(USERS.carol, 'POST', '/api/projects', { name: 'x' })).status).toBe(403);
      const p = await t.api(USERS.bob, 'POST', '/api/projects', { name: 'Bob project' });
      expect(p.status).toBe(201);
      expect(p.body).toMatchObject({ department: 'eng', ownerId: 'bob' });
    });
  });

  describe('optimistic concurrency', () => {
    it('409 with the current document on a stale version (body or If-Match)', async () => {
      const task = await seedTask(t);
      const first = await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, {
        title: 'v2',
        version: 1,
      });
      expect(first.status).toBe(200);
      expect(first.body.version).toBe(2);
      const stale = await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, {
        title: 'lost',
        version: 1,
      });
      expect(stale.status).toBe(409);
      expect(stale.body).toMatchObject({ id: task.id, title: 'v2', version: 2 });
      const header = await t.api(
        USERS.alice,
        'PATCH',
        `/api/tasks/${task.id}`,
        { title: 'lost' },
        { 'if-match': '"1"' },
      );
      expect(header.status).toBe(409);
      const good = await t.api(
        USERS.alice,
        'PATCH',
        `/api/tasks/${task.id}`,
        { title: 'v3' },
        { 'if-match': '"2"' },
      );
      expect(good.status).toBe(200);
      const del = await t.api(USERS.alice, 'DELETE', `/api/tasks/${task.id}`, { version: 2 });
      expect(del.status).toBe(409);
      expect(del.body.version).toBe(3);
      expect(
        (await t.api(USERS.alice, 'DELETE', `/api/tasks/${task.id}`, { version: 3 })).status,
      ).toBe(204);
      expect((await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`)).status).toBe(404);
    });
  });

  describe('validation and bad input', () => {
    it('400 with the failing fields', async () => {
      const r = await t.api(USERS.alice, 'POST', '/api/tasks', {
        projectId: 'nope',
        title: '',
        priority: 9,
        status: 'later',
        surprise: 1,
      });
      expect(r.status).toBe(400);
      const paths = r.body.details.map((d: any) => d.path);
      expect(paths).toEqual(
        expect.arrayContaining(['projectId', 'title', 'priority', 'status', 'surprise']),
      );
    });

    it('400 for a project that does not exist', async () => {
      const r = await t.api(USERS.alice, 'POST', '/api/tasks', {
        projectId: '00000000-0000-4000-8000-000000000000',
        title: 'orphan',
        department: 'eng',
      });
      expect(r.status).toBe(400);
      expect(r.body.details).toEqual([{ path: 'projectId', message: 'no such project' }]);
    });

    it('413 on a 2 MB body', async () => {
      const r = await t.api(USERS.alice, 'POST', '/api/tasks', {
        title: 'x'.repeat(2 * 1024 * 1024),
      });
      expect(r.status).toBe(413);
      expect(r.body.code).toBe('payload_too_large');
    });

    it('never answers 500 to malformed JSON, wrong types, unknown fields, __proto__ or huge strings', async () => {
      const bodies: unknown[] = [
        '{"title": ',
        '[]',
        '"just a string"',
        'null',
        { title: 42 },
        { title: ['a'] },
        { priority: 'high' },
        { tags: 'nope' },
        { tags: [1, 2] },
        { dueAt: 'yesterday' },
        { budget: 'a lot' },
        { unknownField: true },
        '{"__proto__": {"admin": true}, "title": "x"}',
        '{"constructor": {"prototype": {"x": 1}}}',
        { title: 'y'.repeat(100_000) },
        { version: 'seven' },
      ];
      const routes: [string, string][] = [
        ['POST', '/api/tasks'],
        ['PATCH', `/api/tasks/${engTask.id}`],
        ['DELETE', `/api/tasks/${salesTask.id}`],
        ['POST', '/api/projects'],
        ['PATCH', `/api/projects/${engTask.projectId}`],
        ['POST', '/auth/login'],
        ['GET', '/api/tasks?priority=abc&limit=-1'],
        ['GET', '/admin/audit-logs?limit=9999&from=never'],
        ['GET', '/api/tasks/not-a-uuid'],
      ];
      for (const [method, path] of routes) {
        for (const body of bodies) {
          const r = await t.api(USERS.alice, method, path, method === 'GET' ? undefined : body);
          expect([method, path, r.status]).not.toEqual([method, path, 500]);
          expect(r.status).toBeGreaterThanOrEqual(400);
          expect(r.status).toBeLessThan(500);
          expect(typeof r.body).toBe('object');
          expect(typeof r.body.code).toBe('string');
        }
      }
      // nothing was damaged: the sales task is still there, unchanged
      const still = await t.api(USERS.alice, 'GET', `/api/tasks/${salesTask.id}`);
      expect(still.status).toBe(200);
      expect(still.body.version).toBe(salesTask.version);
      expect(({} as Record<string, unknown>).admin).toBeUndefined();
    });
  });

  /**
   * The sample app runs on Fastify by default and on Express with HTTP_ADAPTER=express;
   * `npm test` runs the e2e suites on both. Request bodies are read alike on both (see
   * src/json-body.fastify.ts): what a client sees must not depend on the adapter.
   */
  describe('HTTP adapter', () => {
    it('is the one the run names (HTTP_ADAPTER, Fastify by default)', () => {
      expect(t.app.getHttpAdapter().getType()).toBe(process.env.HTTP_ADAPTER ?? 'fastify');
    });

    it('serves the demo page and its client library, and answers unknown paths with a JSON 404', async () => {
      const page = await fetch(`${t.http}/`);
      expect(page.status).toBe(200);
      expect(page.headers.get('content-type')).toMatch(/^text\/html/);
      expect(await page.text()).toContain('<html');
      const client = await fetch(`${t.http}/client/realtime-client.js`);
      expect(client.status).toBe(200);
      expect(client.headers.get('content-type')).toMatch(/javascript/);
      for (const path of ['/api/nope', '/nope.html', '/realtime/nope']) {
        const r = await t.api(USERS.alice, 'GET', path);
        expect([path, r.status, r.body.code]).toEqual([path, 404, 'not_found']);
      }
    });

    it('matches routes whatever their trailing slash or letter case, as Express does', async () => {
      for (const path of ['/api/tasks/', '/API/Tasks', `/api/tasks/${engTask.id}/`]) {
        const r = await t.api(USERS.alice, 'GET', path);
        expect([path, r.status]).toEqual([path, 200]);
      }
    });

    it('ignores a body that is not JSON, as if there were none', async () => {
      for (const [type, text] of [
        ['application/x-www-form-urlencoded', 'title=formed&department=eng'],
        ['text/plain', '{"title":"plain"}'],
        ['application/octet-stream', 'xyz'],
      ]) {
        const r = await t.api(USERS.alice, 'POST', '/api/tasks', text, { 'content-type': type });
        expect([type, r.status, r.body.code]).toEqual([type, 400, 'validation_failed']);
        // the same answer as a request without a body
        const paths = r.body.details.map((d: any) => d.path);
        expect(paths).toEqual(expect.arrayContaining(['projectId', 'title']));
      }
    });

    it('reads an empty JSON body as {} and answers other charsets 415', async () => {
      const empty = await t.api(USERS.alice, 'POST', '/api/tasks', '', {
        'content-type': 'application/json',
      });
      expect(empty.status).toBe(400);
      expect(empty.body.code).toBe('validation_failed');
      const latin1 = await t.api(USERS.alice, 'POST', '/api/tasks', '{"title":"x"}', {
        'content-type': 'application/json; charset=latin1',
      });
      expect(latin1.status).toBe(415);
      expect(latin1.body.code).toBe('unsupported_media_type');
      const utf8 = await t.api(
        USERS.alice,
        'PATCH',
        `/api/tasks/${engTask.id}`,
        '{"title":"charset named"}',
        { 'content-type': 'Application/JSON; charset=UTF-8' },
      );
      expect(utf8.status).toBe(200);
      expect(utf8.body.title).toBe('charset named');
      engTask = utf8.body;
    });

    it('inflates a gzip JSON body and answers an unknown content encoding 415', async () => {
      const send = (body: Buffer | string, encoding: string) =>
        fetch(`${t.http}/api/tasks/${engTask.id}`, {
          method: 'PATCH',
          headers: {
            authorization: `Bearer ${t.token(USERS.alice)}`,
            'content-type': 'application/json',
            'content-encoding': encoding,
          },
          body,
        });
      const zipped = await send(gzipSync(JSON.stringify({ title: 'sent gzipped' })), 'gzip');
      expect(zipped.status).toBe(200);
      engTask = await zipped.json();
      expect(engTask.title).toBe('sent gzipped');
      const odd = await send('{"title":"x"}', 'compress');
      expect(odd.status).toBe(415);
      expect((await odd.json()).code).toBe('unsupported_media_type');
      // inflated past the 1 MiB limit: 413, whatever the compressed size
      const bomb = await send(gzipSync(`{"title":"${'x'.repeat(2 * 1024 * 1024)}"}`), 'gzip');
      expect(bomb.status).toBe(413);
      expect((await bomb.json()).code).toBe('payload_too_large');
    });

    it('reads a body with a byte order mark, ignores a large non-JSON one, and answers a bad URL in JSON', async () => {
      const bom = await t.api(
        USERS.alice,
        'PATCH',
        `/api/tasks/${engTask.id}`,
        '\ufeff{"title":"after a BOM"}',
      );
      expect(bom.status).toBe(200);
      engTask = bom.body;
      expect(engTask.title).toBe('after a BOM');
      // not JSON, so not read: no 413, whatever its size; a Content-Type that is no media type neither
      for (const type of ['text/plain', 'json']) {
        const r = await t.api(USERS.alice, 'POST', '/api/tasks', 'x'.repeat(2 * 1024 * 1024), {
          'content-type': type,
        });
        expect([type, r.status, r.body.code]).toEqual([type, 400, 'validation_failed']);
      }
      const bad = await t.api(USERS.alice, 'GET', '/api/tasks/%E0%A4%A');
      expect(bad.status).toBe(400);
      expect(bad.body).toMatchObject({ statusCode: 400, code: 'bad_request' });
    });

    it('decodes malformed UTF-8 to U+FFFD and refuses charset=utf8 (no dash) 415, as body-parser does', async () => {
      const send = (body: Buffer, contentType: string) =>
        fetch(`${t.http}/api/tasks/${engTask.id}`, {
          method: 'PATCH',
          headers: {
            authorization: `Bearer ${t.token(USERS.alice)}`,
            'content-type': contentType,
          },
          body,
        });
      const bytes = Buffer.concat([
        Buffer.from('{"title":"bad '),
        Buffer.from([0xc3, 0x28]),
        Buffer.from(' byte"}'),
      ]);
      const decoded = await send(bytes, 'application/json');
      expect(decoded.status).toBe(200);
      engTask = await decoded.json();
      expect(engTask.title).toBe('bad \ufffd( byte');
      const refused = await send(Buffer.from('{"title":"x"}'), 'application/json; charset=utf8');
      expect(refused.status).toBe(415);
      expect((await refused.json()).code).toBe('unsupported_media_type');
    });

    it('answers JSON that is not an object or an array 400, as malformed', async () => {
      for (const text of ['"just a string"', 'null', '42', 'true']) {
        const r = await t.api(USERS.alice, 'POST', '/api/tasks', text);
        expect([text, r.status, r.body.message]).toEqual([text, 400, 'malformed JSON body']);
      }
    });
  });

  describe('authentication', () => {
    const attempts: [string, () => Record<string, string>][] = [
      ['missing', () => ({})],
      [
        'forged (wrong key)',
        () => ({
          authorization: `Bearer ${jwt.sign({ sub: 'alice', roles: ['admin'] }, 'x'.repeat(32), { expiresIn: 60 })}`,
        }),
      ],
      [
        'expired',
        () => ({
          authorization: `Bearer ${jwt.sign({ sub: 'alice', roles: ['admin'], exp: Math.floor(Date.now() / 1000) - 10 }, t.secret)}`,
        }),
      ],
      [
        'alg none',
        () => ({
          authorization: `Bearer ${jwt.sign({ sub: 'alice', roles: ['admin'], exp: Math.floor(Date.now() / 1000) + 60 }, '', { algorithm: 'none' })}`,
        }),
      ],
      [
        'without exp',
        () => ({
          authorization: `Bearer ${jwt.sign({ sub: 'alice', roles: ['admin'] }, t.secret)}`,
        }),
      ],
      [
        'without sub',
        () => ({
          authorization: `Bearer ${jwt.sign({ roles: ['admin'] }, t.secret, { expiresIn: 60 })}`,
        }),
      ],
      [
        'HS384 instead of HS256',
        () => ({
          authorization: `Bearer ${jwt.sign({ sub: 'alice', roles: ['admin'] }, t.secret, { algorithm: 'HS384', expiresIn: 60 })}`,
        }),
      ],
      ['garbage', () => ({ authorization: 'Bearer not.a.jwt' })],
    ];
    it.each(attempts)('401 for a %s token', async (_name, headers) => {
      const r = await t.api(null, 'GET', '/api/tasks', undefined, headers());
      expect(r.status).toBe(401);
      expect(r.body.code).toBe('unauthorized');
    });

    it('accepts the token in access_token, and 403 (not 401) without permission', async () => {
      const ok = await t.api(null, 'GET', `/api/tasks?access_token=${t.token(USERS.bob)}`);
      expect(ok.status).toBe(200);
      const forbidden = await t.api(USERS.bob, 'GET', '/admin/audit-logs');
      expect(forbidden.status).toBe(403);
      expect((await t.api(null, 'GET', '/admin/audit-logs')).status).toBe(401);
      expect((await t.api(USERS.bob, 'GET', '/metrics')).status).toBe(403);
    });
  });

  describe('audit log', () => {
    it('records auth_failed and serves filters and cursor paging, newest first', async () => {
      for (let i = 0; i < 3; i++) {
        await t.api(null, 'GET', '/api/tasks', undefined, {
          authorization: 'Bearer bad',
          'user-agent': `probe-${i}`,
        });
      }
      await t.app.get((await import('@app/realtime')).AuditService).flush();
      const all = await t.api(USERS.alice, 'GET', '/admin/audit-logs?action=auth_failed&limit=2');
      expect(all.status).toBe(200);
      expect(all.body.items).toHaveLength(2);
      expect(all.body.items[0]).toMatchObject({ action: 'auth_failed', outcome: 'failure' });
      expect(Object.keys(all.body.items[0]).sort()).toEqual(
        [
          'action',
          'connectionId',
          'createdAt',
          'details',
          'id',
          'ipAddress',
          'outcome',
          'subscriptionId',
          'userAgent',
          'userId',
        ].sort(),
      );
      expect(Number(all.body.items[0].id)).toBeGreaterThan(Number(all.body.items[1].id));
      expect(all.body.nextCursor).toBeTruthy();
      const page2 = await t.api(
        USERS.alice,
        'GET',
        `/admin/audit-logs?action=auth_failed&limit=2&cursor=${all.body.nextCursor}`,
      );
      expect(page2.status).toBe(200);
      expect(page2.body.items.length).toBeGreaterThan(0);
      expect(Number(page2.body.items[0].id)).toBeLessThan(Number(all.body.items[1].id));
      const seen = new Set([...all.body.items, ...page2.body.items].map((x: any) => x.id));
      expect(seen.size).toBe(all.body.items.length + page2.body.items.length);
      const future = await t.api(
        USERS.alice,
        'GET',
        `/admin/audit-logs?from=${new Date(Date.now() + 60_000).toISOString()}`,
      );
      expect(future.body.items).toEqual([]);
      const byAgent = all.body.items.map((x: any) => x.userAgent);
      expect(byAgent[0]).toMatch(/^probe-/);
      expect((await t.api(USERS.alice, 'GET', '/admin/audit-logs?limit=501')).status).toBe(400);
    });
  });

  it('paginates tasks with a cursor, without duplicates', async () => {
    for (let i = 0; i < 5; i++) await seedTask(t, { title: `page ${i}` }, engTask.projectId);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r: any = await t.api(
        USERS.alice,
        'GET',
        `/api/tasks?limit=3${cursor ? `&cursor=${cursor}` : ''}`,
      );
      expect(r.status).toBe(200);
      seen.push(...r.body.items.map((x: any) => x.id));
      cursor = r.body.nextCursor;
    } while (cursor);
    expect(new Set(seen).size).toBe(seen.length);
    const all = await t.api(USERS.alice, 'GET', '/api/tasks?limit=200');
    expect(seen.length).toBe(all.body.items.length);
    const filtered = await t.api(USERS.alice, 'GET', '/api/tasks?department=sales');
    expect(filtered.body.items.map((x: any) => x.id)).toEqual([salesTask.id]);
  });
});
