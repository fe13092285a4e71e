import { ConnectionRegistry } from '@app/realtime';
import { randomUUID } from 'node:crypto';
import {
  auditItems,
  describeEachDb,
  saveBigTasks,
  seedTask,
  startTestApp,
  TestApp,
  TestUser,
  USERS,
  waitForAudit,
} from './utils/app';
import { SseClient } from './utils/sse-client';
import { metric, waitFor } from './utils/wait';

/**
 * Issue 4, Server-Sent Events: a real EventSource (eventsource@4) against the real app:
 * authentication, event names and ids, Last-Event-ID resume, subscriptions over REST,
 * expiry, heartbeats, limits, audit, metrics and shutdown.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const CLOSED = 2;

let users = 0;
function user(role: 'admin' | 'member' = 'admin', department = 'eng'): TestUser {
  users++;
  return { sub: `sse-${role}-${users}`, roles: [role], attrs: { department } };
}

function streamUrl(t: TestApp, token?: string, queries: unknown[] = []): string {
  const params = new URLSearchParams(token ? { access_token: token } : {});
  for (const q of queries) params.append('subscribe', JSON.stringify(q));
  return `${t.http}/realtime/sse?${params}`;
}

async function patchTask(t: TestApp, id: string, body: Record<string, unknown>) {
  const r = await t.api(USERS.alice, 'PATCH', `/api/tasks/${id}`, body);
  if (r.status !== 200) throw new Error(`PATCH ${id}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as Record<string, any>;
}

describeEachDb('SSE', (db) => {
  let t: TestApp;
  const open: SseClient[] = [];
  const stream = async (u: TestUser, queries: unknown[] = [], headers?: Record<string, string>) => {
    const c = await SseClient.open(t.http, t.token(u), queries, headers);
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    t = await startTestApp(db);
  });
  afterEach(() => {
    for (const c of open.splice(0)) c.close();
  });
  afterAll(async () => {
    SseClient.closeAll();
    await t?.close();
  });

  it('401 with a JSON body and no stream without a valid token', async () => {
    for (const url of [streamUrl(t), streamUrl(t, 'not.a.jwt')]) {
      const r = await fetch(url, { headers: { accept: 'text/event-stream' } });
      expect(r.status).toBe(401);
      expect(r.headers.get('content-type')).toMatch(/^application\/json/);
      expect(await r.json()).toEqual({
        statusCode: 401,
        code: 'unauthorized',
        message: expect.any(String),
      });
    }
    const es = new SseClient(streamUrl(t));
    open.push(es);
    expect(await es.waitFailure()).toMatchObject({ code: 401 });
    expect(es.source.readyState).toBe(CLOSED);
    expect(es.events).toEqual([]);
  });

  it('opens a text/event-stream whose first event is connection_established', async () => {
    const ctrl = new AbortController();
    const r = await fetch(streamUrl(t, t.token(user())), { signal: ctrl.signal });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(r.headers.get('cache-control')).toMatch(/no-cache/);
    const reader = r.body!.getReader();
    let text = '';
    while (!text.includes('\n\n')) text += new TextDecoder().decode((await reader.read()).value);
    expect(text).toMatch(/^event: connection_established\ndata: \{.*\}\n\n/);
    ctrl.abort();

    const me = user();
    const c = await stream(me);
    expect(c.events[0]).toEqual({
      type: 'connection_established',
      lastEventId: '',
      data: {
        connectionId: expect.stringMatching(UUID),
        userId: me.sub,
        serverTime: expect.stringMatching(ISO),
        heartbeatIntervalMs: 30_000,
        protocolVersion: 1,
      },
    });
  });

  it('400 invalid_query with details for a bad subscribe parameter, and no stream', async () => {
    const token = t.token(user());
    const notJson = await fetch(`${streamUrl(t, token)}&subscribe=%7Bnope`);
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toMatchObject({
      code: 'invalid_query',
      details: [{ path: 'subscribe.0', message: expect.any(String) }],
    });
    const bad = await fetch(streamUrl(t, token, [{ collection: 'tasks', bogus: 1 }]));
    expect(bad.status).toBe(400);
    const body = await bad.json();
    expect(body.code).toBe('invalid_query');
    expect(body.details.map((d: any) => d.path).join(' ')).toMatch(/bogus/);
  });

  it('names each event by its message type; data_change carries id: <seq>', async () => {
    const task = await seedTask(t, { title: 'sse 0' });
    const c = await stream(user(), [{ collection: 'tasks', documentId: task.id }]);
    const created = await c.next((e) => e.type === 'subscription_created');
    expect(created.data).toEqual({
      subscriptionId: expect.stringMatching(UUID),
      query: expect.objectContaining({ resourceType: 'document', documentId: task.id }),
    });
    const subId = created.data.subscriptionId;
    await patchTask(t, task.id, { title: 'sse 1' });
    await patchTask(t, task.id, { title: 'sse 2' });
    const changes = await c.waitChanges(subId, 2);
    expect(changes.map((x) => x.document.title)).toEqual(['sse 1', 'sse 2']);
    for (const e of c.events.filter((x) => x.type === 'data_change')) {
      expect(e.lastEventId).toBe(e.data.changes[e.data.changes.length - 1].seq);
      expect(e.data.subscriptionId).toBe(subId);
    }
    expect(c.events.map((e) => e.type).slice(0, 2)).toEqual([
      'connection_established',
      'subscription_created',
    ]);
  });

  it('Last-Event-ID resumes after 100 missed changes: all replayed in order, then live', async () => {
    const task = await seedTask(t, { title: 'r 0' });
    const query = { collection: 'tasks', documentId: task.id };
    const me = user();
    const first = await stream(me, [query]);
    const firstSub = (await first.next((e) => e.type === 'subscription_created')).data
      .subscriptionId;
    await patchTask(t, task.id, { title: 'r 1' });
    await first.waitChanges(firstSub, 1);
    const lastSeen = first.events.find((e) => e.type === 'data_change')!.lastEventId;
    first.close();
    const missed: string[] = [];
    for (let i = 2; i <= 101; i++) {
      await patchTask(t, task.id, { title: `r ${i}` });
      missed.push(`r ${i}`);
    }
    const resumed = await stream(me, [query], { 'Last-Event-ID': lastSeen });
    const sub = (await resumed.next((e) => e.type === 'subscription_created')).data.subscriptionId;
    const replayed = await resumed.waitChanges(sub, 100);
    expect(replayed.map((x) => x.document.title)).toEqual(missed);
    const seqs = replayed.map((x) => Number(x.seq));
    expect(seqs[0]).toBeGreaterThan(Number(lastSeen));
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    await patchTask(t, task.id, { title: 'live' });
    const all = await resumed.waitChanges(sub, 101);
    expect(all.map((x) => x.document.title)).toEqual([...missed, 'live']);
    expect(new Set(all.map((x) => x.seq)).size).toBe(101);
  });

  it('subscriptions over REST: POST 201, 400, 403, 404, DELETE 204', async () => {
    const task = await seedTask(t, { title: 'rest 0' });
    const me = user();
    const c = await stream(me);
    const path = `/realtime/sse/${c.connectionId}/subscriptions`;
    const query = { collection: 'tasks', documentId: task.id };

    const created = await t.api(me, 'POST', path, { query });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      subscriptionId: expect.stringMatching(UUID),
      query: expect.objectContaining({ resourceType: 'document', documentId: task.id }),
    });
    const gone = created.body.subscriptionId;
    const kept = (await t.api(me, 'POST', path, { query })).body.subscriptionId;
    await c.next((e) => e.type === 'subscription_created' && e.data.subscriptionId === gone);
    await patchTask(t, task.id, { title: 'rest 1' });
    await c.waitChanges(gone, 1);
    await c.waitChanges(kept, 1);

    const invalid = await t.api(me, 'POST', path, {
      query: { collection: 'tasks', filters: [{ type: 'field', field: 'nosuch', operator: 'eq' }] },
    });
    expect(invalid.status).toBe(400);
    expect(invalid.body).toMatchObject({ statusCode: 400, code: 'invalid_query' });
    expect(invalid.body.details.length).toBeGreaterThan(0);
    expect(invalid.body.details[0]).toEqual({
      path: expect.stringMatching(/filters/),
      message: expect.any(String),
    });
    const missing = await t.api(me, 'POST', path, { resumeFrom: '1' });
    expect(missing.status).toBe(400);
    expect(missing.body.details).toEqual([{ path: 'query', message: expect.any(String) }]);

    const stranger = await t.api(user(), 'POST', path, { query });
    expect(stranger.status).toBe(403);
    expect(stranger.body.code).toBe('forbidden');
    const unknown = await t.api(me, 'POST', `/realtime/sse/${randomUUID()}/subscriptions`, {
      query,
    });
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('not_found');
    expect((await t.api(null, 'POST', path, { query })).status).toBe(401);

    const strangerDelete = await t.api(user(), 'DELETE', `${path}/${gone}`);
    expect(strangerDelete.status).toBe(403);
    const deleted = await t.api(me, 'DELETE', `${path}/${gone}`);
    expect(deleted.status).toBe(204);
    await c.next((e) => e.type === 'unsubscribed' && e.data.subscriptionId === gone);
    expect((await t.api(me, 'DELETE', `${path}/${gone}`)).status).toBe(404);
    await patchTask(t, task.id, { title: 'rest 2' });
    await c.waitChanges(kept, 2);
    expect(c.changes(gone).map((x) => x.document.title)).toEqual(['rest 1']);
  });

  it('the stream ends at token expiry; a new token with Last-Event-ID resumes', async () => {
    const task = await seedTask(t, { title: 'exp 0' });
    const me = user();
    const query = { collection: 'tasks', documentId: task.id };
    const c = await SseClient.open(t.http, t.token(me, { expiresInSeconds: 3 }), [query]);
    open.push(c);
    const sub = (await c.next((e) => e.type === 'subscription_created')).data.subscriptionId;
    await patchTask(t, task.id, { title: 'exp 1' });
    await c.waitChanges(sub, 1);
    const error = await c.next((e) => e.type === 'error', 6000);
    expect(error.data).toEqual({ code: 'token_expired', message: expect.any(String) });
    await c.waitFailure(0, 5000);
    expect(t.app.get(ConnectionRegistry).get(c.connectionId)).toBeUndefined();
    c.close();
    await patchTask(t, task.id, { title: 'exp 2' });
    const lastSeen = c.events.filter((e) => e.type === 'data_change').pop()!.lastEventId;
    const again = await stream(me, [query], { 'Last-Event-ID': lastSeen });
    const sub2 = (await again.next((e) => e.type === 'subscription_created')).data.subscriptionId;
    const [replayed] = await again.waitChanges(sub2, 1);
    expect(replayed.document.title).toBe('exp 2');
  });
});

describe('SSE: one event larger than MAX_BUFFERED_BYTES [sqlite]', () => {
  let t: TestApp;
  beforeAll(async () => {
    // heartbeats every second: some come due while the big event is still being written
    t = await startTestApp('sqlite', {
      MAX_BUFFERED_BYTES: String(256 * 1024),
      HEARTBEAT_INTERVAL_MS: '1000',
    });
  });
  afterAll(async () => {
    SseClient.closeAll();
    await t?.close();
  });

  it('a transaction whose changes make one ~18 MB event reaches a reading stream, which stays open for the next change; neither one event nor a heartbeat behind it is a backlog', async () => {
    const project = await t.api(USERS.alice, 'POST', '/api/projects', {
      name: 'P',
      department: 'eng',
    });
    const projectId = project.body.id as string;
    const query = {
      collection: 'tasks',
      filters: [{ type: 'field', field: 'projectId', operator: 'eq', value: projectId }],
    };
    const c = await SseClient.open(t.http, t.token(user()), [query]);
    const subId = (await c.next((e) => e.type === 'subscription_created')).data.subscriptionId;
    const ids = await saveBigTasks(t, projectId, 36);
    const got = await c.waitChanges(subId, 36, 30_000);
    expect(got.map((x) => x.documentId)).toEqual(ids);
    const small = await seedTask(t, { title: 'after' }, projectId);
    const all = await c.waitChanges(subId, 37, 30_000);
    expect(all[36].documentId).toBe(small.id);
    // one stream throughout: not closed as a slow consumer and reconnected
    expect(c.events.filter((e) => e.type === 'connection_established')).toHaveLength(1);
    expect(c.events.some((e) => e.type === 'heartbeat')).toBe(true);
    c.close();
  });
});

describe('SSE heartbeat, audit and metrics [sqlite]', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp('sqlite', { HEARTBEAT_INTERVAL_MS: '1000' });
  });
  afterAll(async () => {
    SseClient.closeAll();
    await t?.close();
  });

  it('sends heartbeat events every interval', async () => {
    const c = await SseClient.open(t.http, t.token(user()));
    expect(c.events[0].data.heartbeatIntervalMs).toBe(1000);
    const beats = await c.until(() => {
      const got = c.events.filter((e) => e.type === 'heartbeat');
      return got.length >= 2 ? got : undefined;
    }, 'two heartbeats');
    for (const beat of beats) {
      expect(beat.data).toEqual({ timestamp: expect.stringMatching(ISO) });
    }
    c.close();
  });

  it('realtime_connections{transport="sse"} follows opens and closes', async () => {
    const gauge = async () => {
      const r = await t.api(USERS.alice, 'GET', '/metrics');
      expect(r.status).toBe(200);
      return metric(String(r.body), 'realtime_connections', { transport: 'sse' });
    };
    const base = await waitFor(async () => {
      const v = await gauge();
      return v === t.app.get(ConnectionRegistry).size ? v : undefined;
    }, 'a settled gauge');
    const a = await SseClient.open(t.http, t.token(user()));
    const b = await SseClient.open(t.http, t.token(user()));
    expect(await gauge()).toBe(base + 2);
    a.close();
    await waitFor(async () => (await gauge()) === base + 1, 'the gauge to drop by one');
    b.close();
    await waitFor(async () => (await gauge()) === base, 'the gauge back to its base');
  });

  it('audits connection_established, connection_closed, auth_failed and connection_failed', async () => {
    const me = user();
    const c = await SseClient.open(t.http, t.token(me));
    const connectionId = c.connectionId;
    c.close();
    const items = await waitForAudit(t, `connectionId=${connectionId}`, 'connection_closed');
    expect(items.map((x) => x.action).sort()).toEqual([
      'connection_closed',
      'connection_established',
    ]);
    for (const item of items) {
      expect(item).toMatchObject({
        userId: me.sub,
        details: expect.objectContaining({ transport: 'sse' }),
      });
    }
    const agent = `sse-probe-${Date.now()}`;
    const refused = await fetch(streamUrl(t, 'not.a.jwt'), { headers: { 'user-agent': agent } });
    expect(refused.status).toBe(401);
    for (const action of ['auth_failed', 'connection_failed']) {
      const found = (await auditItems(t, `action=${action}`)).filter((x) => x.userAgent === agent);
      expect(found).toEqual([
        expect.objectContaining({
          action,
          outcome: 'failure',
          details: expect.objectContaining({ transport: 'sse' }),
        }),
      ]);
    }
  });
});

describe('SSE connection limits [sqlite]', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp('sqlite', {
      CONNECTIONS_PER_IP_PER_MINUTE: '3',
      MAX_CONNECTIONS_PER_USER: '1',
    });
  });
  afterAll(async () => {
    SseClient.closeAll();
    await t?.close();
  });

  it('429 JSON past MAX_CONNECTIONS_PER_USER and past CONNECTIONS_PER_IP_PER_MINUTE', async () => {
    const me = user();
    const first = await SseClient.open(t.http, t.token(me));
    const second = await fetch(streamUrl(t, t.token(me)));
    expect(second.status).toBe(429);
    expect(second.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await second.json()).toMatchObject({ statusCode: 429, code: 'limit_exceeded' });
    const other = await SseClient.open(t.http, t.token(user()));
    // the fourth attempt of this IP within the minute
    const fourth = await fetch(streamUrl(t, t.token(user())));
    expect(fourth.status).toBe(429);
    expect(fourth.headers.get('retry-after')).toBe('60');
    expect(await fourth.json()).toMatchObject({ statusCode: 429, code: 'rate_limited' });
    const es = new SseClient(streamUrl(t, t.token(user())));
    expect(await es.waitFailure()).toMatchObject({ code: 429 });
    expect(es.source.readyState).toBe(CLOSED);
    // the open streams are unaffected
    expect(first.source.readyState).toBe(1);
    expect(other.source.readyState).toBe(1);
    // two refusals of this IP in the minute, one audit entry
    expect(await auditItems(t, 'action=rate_limited')).toEqual([
      expect.objectContaining({
        action: 'rate_limited',
        outcome: 'failure',
        userId: null,
        ipAddress: '127.0.0.1',
        details: { transport: 'sse', reason: 'too many connection attempts', limit: 3 },
      }),
    ]);
    for (const c of [first, other, es]) c.close();
  });
});

describe('SSE graceful shutdown [sqlite]', () => {
  it('sends subscription_ended server_shutdown, then the stream ends', async () => {
    const t = await startTestApp('sqlite');
    const c = await SseClient.open(t.http, t.token(user()), [{ collection: 'tasks' }]);
    const sub = (await c.next((e) => e.type === 'subscription_created')).data.subscriptionId;
    try {
      await t.close();
      const ended = await c.next((e) => e.type === 'subscription_ended');
      expect(ended.data).toEqual({ subscriptionId: sub, reason: 'server_shutdown' });
      await c.waitFailure();
    } finally {
      c.close();
    }
  });
});
