import {
  ConnectionRegistry,
  nativeFrameWriterLoaded,
  RealtimeGateway,
  SubscriptionsService,
  TransactionRunner,
} from '@app/realtime';
import { request as httpRequest } from 'node:http';
import jwt from 'jsonwebtoken';
import WebSocket from 'ws';
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
import { metric, waitFor } from './utils/wait';
import { Msg, WsClient } from './utils/ws-client';
import { Task } from '../src/tasks/task.entity';

/**
 * Issue 4, WebSocket: every row of PROTOCOL.md's WebSocket tables provoked by a real `ws`
 * client, the close codes, heartbeats, back-pressure, limits, audit, metrics and scale.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SEQ = /^(0|[1-9][0-9]*)$/;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

let users = 0;
/** A fresh user per test, so that per-user limits and leftovers never leak across tests. */
function user(role: 'admin' | 'manager' | 'member' = 'admin', department = 'eng'): TestUser {
  users++;
  return { sub: `ws-${role}-${users}`, roles: [role], attrs: { department } };
}

/** The messages a client received after `from` (its `messages` index). */
const since = (c: WsClient, from: number) => c.messages.slice(from);

/** The socket still answers requests and was not closed. */
async function expectUsable(c: WsClient): Promise<void> {
  const reply = await c.request('ping', { ts: 'still-there' });
  expect(reply).toMatchObject({ type: 'pong', data: { ts: 'still-there' } });
  expect(c.closed).toBeUndefined();
}

/** Sends a raw frame, then a ping; returns what arrived in between (the frame's answer). */
async function answerTo(c: WsClient, frame: string | Buffer): Promise<Msg[]> {
  const from = c.messages.length;
  c.socket.send(frame);
  const pong = await c.request('ping', { ts: 'probe' });
  expect(pong.type).toBe('pong');
  expect(c.closed).toBeUndefined();
  return since(c, from).filter((m) => m !== pong);
}

/** Connects without waiting for connection_established (refused connections). */
function rawConnect(t: TestApp, token?: string, headers: Record<string, string> = {}) {
  return WsClient.connect(t.ws, token, { headers });
}

async function metrics(t: TestApp): Promise<string> {
  const r = await t.api(USERS.alice, 'GET', '/metrics');
  expect(r.status).toBe(200);
  return String(r.body);
}

async function createProject(t: TestApp, department = 'eng'): Promise<string> {
  const r = await t.api(USERS.alice, 'POST', '/api/projects', { name: 'P', department });
  expect(r.status).toBe(201);
  return r.body.id;
}

async function patchTask(t: TestApp, id: string, body: Record<string, unknown>) {
  const r = await t.api(USERS.alice, 'PATCH', `/api/tasks/${id}`, body);
  if (r.status !== 200) throw new Error(`PATCH ${id}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as Record<string, any>;
}

describeEachDb('WebSocket messages', (db) => {
  let t: TestApp;
  let projectId: string;
  const open: WsClient[] = [];
  const connect = async (u: TestUser, options?: { expiresInSeconds?: number }) => {
    const c = await WsClient.open(t.ws, t.token(u, options));
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    t = await startTestApp(db, {
      MAX_SUBSCRIPTIONS_PER_CONNECTION: '3',
      MAX_CONNECTIONS_PER_USER: '3',
    });
    projectId = await createProject(t);
  });
  afterEach(() => {
    for (const c of open.splice(0)) c.close();
  });
  afterAll(() => t?.close());

  it('sends connection_established first, with every field', async () => {
    const before = Date.now();
    const me = user();
    const c = await rawConnect(t, t.token(me));
    open.push(c);
    const first = await c.next(() => true);
    expect(c.messages[0]).toBe(first);
    expect(first).toEqual({
      type: 'connection_established',
      data: {
        connectionId: expect.stringMatching(UUID),
        userId: me.sub,
        serverTime: expect.stringMatching(ISO),
        heartbeatIntervalMs: 30_000,
        protocolVersion: 1,
      },
    });
    expect(Date.parse(first.data.serverTime)).toBeGreaterThanOrEqual(before - 1000);
    expect(Date.parse(first.data.serverTime)).toBeLessThanOrEqual(Date.now() + 1000);
    const second = await rawConnect(t, t.token(me));
    open.push(second);
    const other = await second.next(() => true);
    expect(other.data.connectionId).not.toBe(first.data.connectionId);
  });

  it('subscribe: subscription_created with the normalised query and the id, then data_change', async () => {
    const c = await connect(user());
    c.send(
      'subscribe',
      {
        query: {
          collection: 'tasks',
          filters: [{ type: 'field', field: 'priority', operator: 'gte', value: 4 }],
        },
      },
      'sub-1',
    );
    const created = await c.next((m) => m.id === 'sub-1');
    expect(created).toEqual({
      type: 'subscription_created',
      id: 'sub-1',
      data: {
        subscriptionId: expect.stringMatching(UUID),
        query: expect.objectContaining({
          resourceType: 'collection',
          database: 'default',
          collection: 'tasks',
          filters: [expect.objectContaining({ field: 'priority', operator: 'gte', value: 4 })],
          includeInitialData: false,
          includeMetadata: true,
          batchSize: expect.any(Number),
          throttleMs: 0,
        }),
      },
    });
    const subId = created.data.subscriptionId;
    const low = await seedTask(t, { priority: 1, title: 'low' }, projectId);
    const high = await seedTask(t, { priority: 5, title: 'high' }, projectId);
    const [change] = await c.waitChanges(subId, 1);
    expect(change).toEqual({
      seq: expect.stringMatching(SEQ),
      operation: 'insert',
      event: 'added',
      database: 'default',
      collection: 'tasks',
      documentId: high.id,
      document: expect.objectContaining({ id: high.id, title: 'high', priority: 5 }),
      changedFields: expect.any(Array),
      metadata: { timestamp: expect.stringMatching(ISO), actorId: 'alice', version: 1 },
    });
    const frame = c.messages.find((m) => m.type === 'data_change')!;
    expect(Object.keys(frame.data).sort()).toEqual(['changes', 'subscriptionId']);
    expect(frame.data.subscriptionId).toBe(subId);
    // the low-priority insert (committed first) was never delivered
    await patchTask(t, high.id, { title: 'high 2' });
    const changes = await c.waitChanges(subId, 2);
    expect(changes.map((x) => x.documentId)).toEqual([high.id, high.id]);
    expect(changes.map((x) => x.documentId)).not.toContain(low.id);
    expect(Number(changes[1].seq)).toBeGreaterThan(Number(changes[0].seq));
    expect(changes[1]).toMatchObject({ operation: 'update', event: 'modified' });
  });

  it('a change dispatched alone is framed for many subscriptions in chunks as they are routed, two dispatched together only once all are routed, in one frame each: every subscription gets each change once, in order', async () => {
    // 60 connections of 3 subscriptions (180 > 2 × ROUTE_CHUNK in SubscriptionsService):
    // the whole collection, one document, and a filter that only the first task matches
    const clients: WsClient[] = [];
    const ids: { all: string; doc: string; high: string }[] = [];
    const x = await seedTask(t, { priority: 5, title: 'x0' }, projectId);
    const y = await seedTask(t, { priority: 1, title: 'y0' }, projectId);
    for (let i = 0; i < 60; i++) {
      const c = await connect(user());
      clients.push(c);
      ids.push({
        all: await c.subscribe({ collection: 'tasks' }),
        doc: await c.subscribe({ collection: 'tasks', documentId: x.id }),
        high: await c.subscribe({
          collection: 'tasks',
          filters: [{ type: 'field', field: 'priority', operator: 'gte', value: 4 }],
        }),
      });
    }
    // the order in which the service routes (prepare: one call per subscription and
    // change) and frames (flush: one call per subscription and dispatch)
    const service = t.app.get(SubscriptionsService) as unknown as Record<
      'prepare' | 'flush',
      (...args: unknown[]) => unknown
    >;
    const prepare = jest.spyOn(service, 'prepare');
    const flush = jest.spyOn(service, 'flush');
    const span = (spy: jest.SpyInstance) => ({
      first: Math.min(...spy.mock.invocationCallOrder),
      last: Math.max(...spy.mock.invocationCallOrder),
      calls: spy.mock.calls.length,
    });
    const titles = (changes: Record<string, any>[]) => changes.map((c) => c.document.title);
    try {
      // alone: a PATCH; the first frames before the last subscription is routed
      await patchTask(t, x.id, { title: 'x1' });
      for (const [i, c] of clients.entries()) await c.waitChanges(ids[i].doc, 1);
      expect(span(prepare).calls).toBe(180);
      expect(span(flush).calls).toBe(180);
      expect(span(flush).first).toBeLessThan(span(prepare).last);
      await patchTask(t, y.id, { title: 'y1' });
      for (const [i, c] of clients.entries()) await c.waitChanges(ids[i].all, 2);
      prepare.mockClear();
      flush.mockClear();
      // together: one transaction, two changes, one dispatch; every subscription routed
      // (180 for the first change, 120 for the second) before the first frame
      await t.app.get(TransactionRunner).transaction(async (m) => {
        for (const [id, title] of [
          [x.id, 'x2'],
          [y.id, 'y2'],
        ]) {
          const row = await m.getRepository(Task).findOneByOrFail({ id });
          row.title = title;
          await m.save(row);
        }
      });
      for (const [i, c] of clients.entries()) await c.waitChanges(ids[i].all, 4);
      expect(span(prepare).calls).toBe(300);
      expect(span(flush).calls).toBe(180);
      expect(span(prepare).last).toBeLessThan(span(flush).first);
    } finally {
      prepare.mockRestore();
      flush.mockRestore();
    }
    for (const [i, c] of clients.entries()) {
      expect(titles(await c.waitChanges(ids[i].all, 4))).toEqual(['x1', 'y1', 'x2', 'y2']);
      expect(titles(await c.waitChanges(ids[i].doc, 2))).toEqual(['x1', 'x2']);
      expect(titles(await c.waitChanges(ids[i].high, 2))).toEqual(['x1', 'x2']);
    }
    await Promise.all(clients.map((c) => c.request('ping')));
    const frames = (c: WsClient, id: string) =>
      c.messages
        .filter((m) => m.type === 'data_change' && m.data.subscriptionId === id)
        .map((m) => titles(m.data.changes));
    for (const [i, c] of clients.entries()) {
      expect(frames(c, ids[i].all)).toEqual([['x1'], ['y1'], ['x2', 'y2']]);
      expect(frames(c, ids[i].doc)).toEqual([['x1'], ['x2']]);
      expect(frames(c, ids[i].high)).toEqual([['x1'], ['x2']]);
    }
  });

  it("a quiet server sends a change to its subscriber before it answers the writer's PATCH", async () => {
    const c = await connect(user());
    const task = await seedTask(t, { title: 'before' }, projectId);
    c.send('subscribe', { query: { collection: 'tasks', documentId: task.id } }, 'order-1');
    const created = await c.next((m) => m.id === 'order-1');
    // no dispatch for a while: the feed is quiet (ChangeFeedService.quietMs)
    await new Promise((resolve) => setTimeout(resolve, 50));
    // What this process reads first, the subscriber's socket or the writer's. The app runs
    // in this process, so both writes happen in one turn of its event loop and both sockets
    // are readable at the next poll, reported (and read) in the order they were written.
    const seen: string[] = [];
    c.socket.on('message', (raw) => {
      if ((JSON.parse(raw.toString()) as Msg).type === 'data_change') seen.push('data_change');
    });
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const req = httpRequest(
        `${t.http}/api/tasks/${task.id}`,
        {
          method: 'PATCH',
          headers: {
            authorization: `Bearer ${t.token(USERS.alice)}`,
            'content-type': 'application/json',
          },
        },
        (res) => {
          seen.push('response');
          res.resume();
          res.on('end', () => resolve(res.statusCode));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ title: 'after' }));
    });
    expect(status).toBe(200);
    const [change] = await c.waitChanges(created.data.subscriptionId, 1);
    expect(change).toMatchObject({ documentId: task.id, document: { title: 'after' } });
    expect(seen).toEqual(['data_change', 'response']);
  });

  it('one change reaches each subscription once: two of one connection, and connections with one each', async () => {
    // a connection with two subscriptions gets both frames of a dispatch in one write
    // (SubscriptionsService.dispatch: framesDue); the others one frame each
    const both = await connect(user());
    const mine = await both.subscribe({ collection: 'tasks' });
    const filtered = await both.subscribe({
      collection: 'tasks',
      filters: [{ type: 'field', field: 'priority', operator: 'gte', value: 4 }],
    });
    const singles = [await connect(user()), await connect(user())];
    const singleIds = [];
    for (const c of singles) singleIds.push(await c.subscribe({ collection: 'tasks' }));
    const task = await seedTask(t, { priority: 5, title: 'seen by all' }, projectId);
    await patchTask(t, task.id, { title: 'seen by all, 2' });
    for (const id of [mine, filtered]) {
      const changes = await both.waitChanges(id, 2);
      expect(changes.map((c) => [c.documentId, c.operation])).toEqual([
        [task.id, 'insert'],
        [task.id, 'update'],
      ]);
    }
    for (const [i, c] of singles.entries()) {
      const changes = await c.waitChanges(singleIds[i], 2);
      expect(changes.map((x) => x.operation)).toEqual(['insert', 'update']);
      expect(changes[1].document.title).toBe('seen by all, 2');
    }
    // nothing twice: one data_change per subscription per change
    await new Promise((resolve) => setTimeout(resolve, 100));
    const frames = (c: WsClient, id: string) =>
      c.messages.filter((m) => m.type === 'data_change' && m.data.subscriptionId === id);
    expect(frames(both, mine).flatMap((f) => f.data.changes)).toHaveLength(2);
    expect(frames(both, filtered).flatMap((f) => f.data.changes)).toHaveLength(2);
    for (const [i, c] of singles.entries())
      expect(frames(c, singleIds[i]).flatMap((f) => f.data.changes)).toHaveLength(2);
  });

  it('subscribe with includeInitialData: initial_data chunks before any data_change', async () => {
    const task = await seedTask(t, { title: 'snap' }, projectId);
    const c = await connect(user());
    const created = await c.request('subscribe', {
      query: { collection: 'tasks', documentId: task.id, includeInitialData: true },
    });
    expect(created.type).toBe('subscription_created');
    expect(created.data.query.resourceType).toBe('document');
    const subId = created.data.subscriptionId;
    const chunk = await c.next((m) => m.type === 'initial_data');
    expect(chunk.data).toEqual({
      subscriptionId: subId,
      documents: [expect.objectContaining({ id: task.id, title: 'snap' })],
      chunkIndex: 0,
      totalChunks: 1,
      isLast: true,
      seq: expect.stringMatching(SEQ),
    });
    await patchTask(t, task.id, { title: 'snap 2' });
    const [change] = await c.waitChanges(subId, 1);
    expect(Number(change.seq)).toBeGreaterThan(Number(chunk.data.seq));
    expect(c.messages.indexOf(chunk)).toBeLessThan(
      c.messages.findIndex((m) => m.type === 'data_change'),
    );
  });

  it('unsubscribe: unsubscribed with the id, and no change after it', async () => {
    const task = await seedTask(t, {}, projectId);
    const c = await connect(user());
    const query = { collection: 'tasks', documentId: task.id };
    const gone = await c.subscribe(query);
    const kept = await c.subscribe(query);
    c.send('unsubscribe', { subscriptionId: gone }, 'u-1');
    const reply = await c.next((m) => m.id === 'u-1');
    expect(reply).toEqual({ type: 'unsubscribed', id: 'u-1', data: { subscriptionId: gone } });
    await patchTask(t, task.id, { title: 'after unsubscribe' });
    await c.waitChanges(kept, 1);
    expect(c.changes(gone)).toEqual([]);
    const list = await c.request('get_subscriptions');
    expect(list.data.subscriptions.map((s: any) => s.subscriptionId)).toEqual([kept]);
  });

  it('ping: pong with ts and serverTime, id echoed', async () => {
    const c = await connect(user());
    c.send('ping', { ts: { n: 42, s: 'x' } }, 'p-1');
    const pong = await c.next((m) => m.id === 'p-1');
    expect(pong).toEqual({
      type: 'pong',
      id: 'p-1',
      data: { ts: { n: 42, s: 'x' }, serverTime: expect.stringMatching(ISO) },
    });
    c.send('ping', { ts: 1234567 }, 'p-2');
    expect((await c.next((m) => m.id === 'p-2')).data.ts).toBe(1234567);
  });

  it('get_subscriptions: subscriptionId, query and createdAt of each, id echoed', async () => {
    const c = await connect(user());
    const empty = await c.request('get_subscriptions');
    expect(empty).toMatchObject({ type: 'subscriptions', data: { subscriptions: [] } });
    const a = await c.request('subscribe', { query: { collection: 'tasks' } });
    const b = await c.request('subscribe', { query: { collection: 'projects' } });
    c.send('get_subscriptions', undefined, 'g-1');
    const reply = await c.next((m) => m.id === 'g-1');
    expect(reply.type).toBe('subscriptions');
    expect(reply.data.subscriptions).toHaveLength(2);
    expect(reply.data.subscriptions).toEqual(
      expect.arrayContaining(
        [a, b].map((x) => ({
          subscriptionId: x.data.subscriptionId,
          query: x.data.query,
          createdAt: expect.stringMatching(ISO),
        })),
      ),
    );
  });

  it('auth: auth_ok with the new expiry, id echoed', async () => {
    const me = user();
    const c = await connect(me);
    const fresh = t.token(me, { expiresInSeconds: 7200 });
    const exp = (jwt.decode(fresh) as { exp: number }).exp;
    c.send('auth', { token: fresh }, 'a-1');
    const ok = await c.next((m) => m.id === 'a-1');
    expect(ok).toEqual({
      type: 'auth_ok',
      id: 'a-1',
      data: { expiresAt: new Date(exp * 1000).toISOString() },
    });
    // a token that does not verify is refused, and the connection stays
    c.send('auth', { token: 'not.a.jwt' }, 'a-2');
    const refused = await c.next((m) => m.id === 'a-2');
    expect(refused).toMatchObject({ type: 'error', data: { code: 'forbidden' } });
    await expectUsable(c);
  });

  it('invalid_message for non-JSON, non-object and missing type; the socket stays', async () => {
    const c = await connect(user());
    for (const frame of ['not json', '{"type": "ping"', '[1,2]', '"text"', '42', 'null']) {
      const answer = await answerTo(c, frame);
      expect(answer).toEqual([
        { type: 'error', data: { code: 'invalid_message', message: expect.any(String) } },
      ]);
    }
    const missing = await answerTo(c, JSON.stringify({ id: 'm-1', data: {} }));
    expect(missing).toEqual([
      { type: 'error', id: 'm-1', data: { code: 'invalid_message', message: expect.any(String) } },
    ]);
    const binary = await answerTo(c, Buffer.from('{"type":"ping"}'));
    expect(binary).toMatchObject([{ type: 'error', data: { code: 'invalid_message' } }]);
    await expectUsable(c);
  });

  it('unknown_type with the id; the socket stays', async () => {
    const c = await connect(user());
    const reply = await c.request('teleport', {});
    expect(reply).toMatchObject({ type: 'error', data: { code: 'unknown_type' } });
    expect(typeof reply.data.message).toBe('string');
    await expectUsable(c);
  });

  it('invalid_query with details; the socket stays', async () => {
    const c = await connect(user());
    const reply = await c.request('subscribe', {
      query: {
        collection: 'tasks',
        bogus: true,
        filters: [{ type: 'field', field: 'nosuchfield', operator: 'eq', value: 1 }],
      },
    });
    expect(reply).toMatchObject({ type: 'error', data: { code: 'invalid_query' } });
    expect(reply.data.details.length).toBeGreaterThanOrEqual(2);
    for (const d of reply.data.details) {
      expect(d).toEqual({ path: expect.any(String), message: expect.any(String) });
    }
    const paths = reply.data.details.map((d: any) => d.path).join(' ');
    expect(paths).toMatch(/bogus/);
    expect(paths).toMatch(/filters/);
    const unknown = await c.request('subscribe', { query: { collection: 'nope' } });
    expect(unknown.data.code).toBe('invalid_query');
    expect(unknown.data.details[0].path).toMatch(/collection/);
    const noQuery = await c.request('subscribe', { tabId: 'x' });
    expect(noQuery.data).toMatchObject({
      code: 'invalid_query',
      details: [{ path: 'query', message: expect.any(String) }],
    });
    await expectUsable(c);
  });

  it('forbidden: a member filtering on a field it may not read; the socket stays', async () => {
    const c = await connect(user('member'));
    const reply = await c.request('subscribe', {
      query: {
        collection: 'tasks',
        filters: [{ type: 'field', field: 'budget', operator: 'gt', value: 100 }],
      },
    });
    expect(reply).toMatchObject({ type: 'error', data: { code: 'forbidden' } });
    const allowed = await c.request('subscribe', { query: { collection: 'tasks' } });
    expect(allowed.type).toBe('subscription_created');
    await expectUsable(c);
  });

  it("not_found: unsubscribe of an unknown or another user's subscription; the socket stays", async () => {
    const mine = await connect(user());
    const theirs = await connect(user());
    const theirSub = await theirs.subscribe({ collection: 'tasks' });
    const unknown = await mine.request('unsubscribe', {
      subscriptionId: '00000000-0000-4000-8000-000000000000',
    });
    expect(unknown).toMatchObject({ type: 'error', data: { code: 'not_found' } });
    const other = await mine.request('unsubscribe', { subscriptionId: theirSub });
    expect(other).toMatchObject({ type: 'error', data: { code: 'not_found' } });
    const noId = await mine.request('unsubscribe', {});
    expect(noId.data.code).toBe('not_found');
    // the other user's subscription is intact
    const list = await theirs.request('get_subscriptions');
    expect(list.data.subscriptions.map((s: any) => s.subscriptionId)).toEqual([theirSub]);
    await expectUsable(mine);
  });

  it('limit_exceeded past MAX_SUBSCRIPTIONS_PER_CONNECTION; the socket stays', async () => {
    const c = await connect(user());
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await c.subscribe({ collection: 'tasks' }));
    const fourth = await c.request('subscribe', { query: { collection: 'tasks' } });
    expect(fourth).toMatchObject({ type: 'error', data: { code: 'limit_exceeded' } });
    expect(fourth.data.message).toMatch(/3/);
    await expectUsable(c);
    await c.request('unsubscribe', { subscriptionId: ids[0] });
    expect((await c.request('subscribe', { query: { collection: 'tasks' } })).type).toBe(
      'subscription_created',
    );
  });

  it('limit_exceeded then close 4008 past MAX_CONNECTIONS_PER_USER; the others stay', async () => {
    const me = user();
    const first = [await connect(me), await connect(me), await connect(me)];
    const refused = await rawConnect(t, t.token(me));
    const error = await refused.next(() => true);
    expect(error).toMatchObject({ type: 'error', data: { code: 'limit_exceeded' } });
    expect((await refused.waitClose()).code).toBe(4008);
    expect(refused.messages.some((m) => m.type === 'connection_established')).toBe(false);
    for (const c of first) await expectUsable(c);
    // a closed connection frees its place
    first[0].close();
    await first[0].waitClose();
    const again = await waitFor(async () => {
      const c = await rawConnect(t, t.token(me));
      const m = await c.next(() => true);
      if (m.type === 'connection_established') return c;
      c.close();
      return undefined;
    }, 'a free connection slot');
    open.push(again);
  });

  it('rate_limited past the message burst, each refused request answered with its id; the socket stays', async () => {
    const c = await connect(user());
    // past the burst of 100, yet fewer than the 50 refusals in a row that close the socket
    const ids = Array.from({ length: 140 }, (_, i) => `burst-${i}`);
    for (const id of ids) c.send('ping', { ts: id }, id);
    const replies = await Promise.all(ids.map((id) => c.next((m) => m.id === id)));
    const pongs = replies.filter((m) => m.type === 'pong');
    const limited = replies.filter((m) => m.type === 'error');
    expect(pongs.length).toBeGreaterThanOrEqual(100);
    expect(limited.length).toBeGreaterThanOrEqual(1);
    expect(pongs.length + limited.length).toBe(ids.length);
    for (const m of limited) expect(m.data).toMatchObject({ code: 'rate_limited' });
    expect(c.closed).toBeUndefined();
    // tokens come back: a later request is served
    const pong = await waitFor(async () => {
      const r = await c.request('ping', { ts: 'later' });
      return r.type === 'pong' ? r : undefined;
    }, 'a pong after the burst');
    expect(pong.data.ts).toBe('later');
  });
});

/**
 * A client that stops reading is closed 4009 (slow consumer) once its backlog passes
 * MAX_BUFFERED_BYTES, while 50 others receive every change, once and in order.
 */
async function slowConsumerWhileOthersReceive(
  t: TestApp,
  connect: (u: TestUser) => Promise<WsClient>,
): Promise<void> {
  const projectId = await createProject(t);
  const big = {
    title: 'B'.repeat(500),
    tags: Array.from({ length: 50 }, (_, i) => `${i}`.padEnd(50, 'x')),
  };
  const tasks = await Promise.all(Array.from({ length: 5 }, () => seedTask(t, big, projectId)));
  const slow = await connect(user());
  // many subscriptions, so that every change is many frames for it
  for (let i = 0; i < 40; i++) await slow.subscribe({ collection: 'tasks' });
  const others: WsClient[] = [];
  const subs: string[] = [];
  for (let i = 0; i < 50; i++) {
    const c = await connect(user());
    others.push(c);
    subs.push(await c.subscribe({ collection: 'tasks' }));
  }
  const registry = t.app.get(ConnectionRegistry);
  const slowId = slow.messages[0].data.connectionId;
  (slow.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
  let made = 0;
  while (registry.get(slowId) && made < 500) {
    await patchTask(t, tasks[made % tasks.length].id, { title: `${'B'.repeat(490)}${made}` });
    made++;
  }
  expect(registry.get(slowId)).toBeUndefined();
  // a few more after the drop, still delivered to everyone else
  for (let i = 0; i < 5; i++, made++) {
    await patchTask(t, tasks[made % tasks.length].id, { title: `${'B'.repeat(490)}${made}` });
  }
  for (let i = 0; i < others.length; i++) {
    const got = await others[i].waitChanges(subs[i], made);
    expect(got).toHaveLength(made);
    const seqs = got.map((x) => Number(x.seq));
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(new Set(seqs).size).toBe(made);
    expect(others[i].closed).toBeUndefined();
  }
  // once it reads again, the slow client sees what was queued, then the 4009 close
  (slow.socket as unknown as { _socket: { resume(): void } })._socket.resume();
  expect((await slow.waitClose(15_000)).code).toBe(4009);
  expect(
    metric(await metrics(t), 'realtime_dropped_connections_total', { reason: 'slow_consumer' }),
  ).toBe(1);
}

describe('WebSocket closes, audit and metrics [sqlite]', () => {
  let t: TestApp;
  const open: WsClient[] = [];
  const connect = async (u: TestUser, options?: { expiresInSeconds?: number }) => {
    const c = await WsClient.open(t.ws, t.token(u, options));
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    t = await startTestApp('sqlite', { MAX_BUFFERED_BYTES: String(256 * 1024) });
  });
  afterEach(() => {
    for (const c of open.splice(0)) c.close();
  });
  afterAll(() => t?.close());

  it('1008 "authentication required" without a token, audited', async () => {
    const agent = `no-token-${Date.now()}`;
    const c = await rawConnect(t, undefined, { 'user-agent': agent });
    expect(await c.waitClose()).toEqual({ code: 1008, reason: 'authentication required' });
    expect(c.messages).toEqual([]);
    const failed = (await auditItems(t, 'action=connection_failed')).filter(
      (x) => x.userAgent === agent,
    );
    expect(failed).toEqual([
      expect.objectContaining({
        action: 'connection_failed',
        outcome: 'failure',
        ipAddress: expect.stringContaining('127.0.0.1'),
      }),
    ]);
    const authFailed = (await auditItems(t, 'action=auth_failed')).filter(
      (x) => x.userAgent === agent,
    );
    expect(authFailed).toHaveLength(1);
  });

  it('1008 "authentication failed" for a forged, expired or sub-less token, audited', async () => {
    const agent = `bad-token-${Date.now()}`;
    const tokens = [
      jwt.sign({ sub: 'alice', roles: ['admin'] }, 'x'.repeat(32), { expiresIn: 60 }),
      jwt.sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 10 }, t.secret),
      jwt.sign({ roles: ['admin'] }, t.secret, { expiresIn: 60 }),
      'not.a.jwt',
    ];
    for (const token of tokens) {
      const c = await rawConnect(t, token, { 'user-agent': agent });
      expect(await c.waitClose()).toEqual({ code: 1008, reason: 'authentication failed' });
      expect(c.messages).toEqual([]);
    }
    // the header works as well as the query parameter
    const header = await WsClient.connect(t.ws, undefined, {
      headers: { authorization: 'Bearer not.a.jwt', 'user-agent': agent },
    });
    expect((await header.waitClose()).code).toBe(1008);
    const authFailed = (await auditItems(t, 'action=auth_failed')).filter(
      (x) => x.userAgent === agent,
    );
    expect(authFailed).toHaveLength(tokens.length + 1);
  });

  it('auth refresh with a token of another sub: error, then close 1008', async () => {
    const me = user();
    const c = await connect(me);
    c.send('auth', { token: t.token(user()) }, 'other-sub');
    const error = await c.next((m) => m.id === 'other-sub');
    expect(error).toMatchObject({ type: 'error', data: { code: 'forbidden' } });
    expect((await c.waitClose()).code).toBe(1008);
    expect(c.messages.some((m) => m.type === 'auth_ok')).toBe(false);
  });

  it('1009 for a frame over 64 KiB; a frame just under it is served', async () => {
    const c = await connect(user());
    const fits = 'x'.repeat(64 * 1024 - 200);
    const pong = await c.request('ping', { ts: fits });
    expect(pong.data.ts).toBe(fits);
    c.socket.send('x'.repeat(64 * 1024 + 1));
    expect((await c.waitClose()).code).toBe(1009);
  });

  it('token_expired then close 4001 when the token expires; a refreshed connection stays', async () => {
    const me = user();
    const expiring = await connect(me, { expiresInSeconds: 2 });
    const refreshed = await connect(me, { expiresInSeconds: 2 });
    const ok = await refreshed.request('auth', { token: t.token(me, { expiresInSeconds: 600 }) });
    expect(ok.type).toBe('auth_ok');
    const error = await expiring.next((m) => m.type === 'error', 5000);
    expect(error).toEqual({
      type: 'error',
      data: { code: 'token_expired', message: expect.any(String) },
    });
    expect((await expiring.waitClose(5000)).code).toBe(4001);
    await expectUsable(refreshed);
    const closed = await auditItems(t, `action=connection_closed&userId=${me.sub}`);
    expect(closed).toHaveLength(1);
  });

  it('a token that expires sooner than those already connected still expires on time', async () => {
    // the expiry timer is armed for the earliest expiry: a later, sooner one re-arms it
    const later = await connect(user(), { expiresInSeconds: 600 });
    const sooner = await connect(user(), { expiresInSeconds: 2 });
    const error = await sooner.next((m) => m.type === 'error', 5000);
    expect(error.data.code).toBe('token_expired');
    expect((await sooner.waitClose(5000)).code).toBe(4001);
    await expectUsable(later);
  });

  it('close 4008 for a sustained message flood, audited as rate_limited', async () => {
    const c = await connect(user());
    const connectionId = c.messages[0].data.connectionId;
    for (let i = 0; i < 400 && c.socket.readyState === WebSocket.OPEN; i++) c.send('ping', {});
    expect((await c.waitClose()).code).toBe(4008);
    const limited = c.messages.filter((m) => m.type === 'error');
    expect(limited.length).toBeGreaterThan(1);
    expect(limited.every((m) => m.data.code === 'rate_limited')).toBe(true);
    const audit = await auditItems(t, `action=rate_limited&connectionId=${connectionId}`);
    expect(audit.length).toBeGreaterThanOrEqual(1);
    expect(audit[0]).toMatchObject({ outcome: 'failure', connectionId });
    expect(
      metric(await metrics(t), 'realtime_dropped_connections_total', { reason: 'rate_limited' }),
    ).toBe(1);
  });

  it('audits connection_established and connection_closed with the connection id', async () => {
    const me = user();
    const c = await WsClient.open(t.ws, t.token(me));
    const connectionId = c.messages[0].data.connectionId;
    c.close();
    await c.waitClose();
    const items = await waitForAudit(t, `connectionId=${connectionId}`, 'connection_closed');
    expect(items.map((x) => x.action).sort()).toEqual([
      'connection_closed',
      'connection_established',
    ]);
    for (const item of items) {
      expect(item).toMatchObject({ userId: me.sub, connectionId, outcome: 'success' });
    }
  });

  it('realtime_connections{transport="websocket"} follows opens and closes', async () => {
    const gauge = async () =>
      metric(await metrics(t), 'realtime_connections', { transport: 'websocket' });
    const base = await waitFor(async () => {
      const v = await gauge();
      return v === t.app.get(ConnectionRegistry).size ? v : undefined;
    }, 'a settled gauge');
    const a = await connect(user());
    const b = await connect(user());
    expect(await gauge()).toBe(base + 2);
    a.close();
    await waitFor(async () => (await gauge()) === base + 1, 'the gauge to drop by one');
    b.close();
    await waitFor(async () => (await gauge()) === base, 'the gauge back to its base');
  });

  it('closes a slow consumer 4009 while 50 others receive every change', () => {
    expect(t.app.get(RealtimeGateway).nativeWrites).toBe(nativeFrameWriterLoaded);
    return slowConsumerWhileOthersReceive(t, connect);
  });
});

describe('WebSocket fan-out with NATIVE_WRITES=false (one fs.writeSync per socket) [sqlite]', () => {
  let t: TestApp;
  const open: WsClient[] = [];
  const connect = async (u: TestUser) => {
    const c = await WsClient.open(t.ws, t.token(u));
    open.push(c);
    return c;
  };
  beforeAll(async () => {
    t = await startTestApp('sqlite', {
      MAX_BUFFERED_BYTES: String(256 * 1024),
      NATIVE_WRITES: 'false',
    });
  });
  afterEach(() => {
    for (const c of open.splice(0)) c.close();
  });
  afterAll(() => t?.close());

  it('runs the portable path (the default app runs the native one when it is built)', () => {
    expect(t.app.get(RealtimeGateway).nativeWrites).toBe(false);
  });

  it('closes a slow consumer 4009 while 50 others receive every change', () =>
    slowConsumerWhileOthersReceive(t, connect));
});

describe('WebSocket: one frame larger than MAX_BUFFERED_BYTES [sqlite]', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp('sqlite', { MAX_BUFFERED_BYTES: String(256 * 1024) });
  });
  afterAll(() => t?.close());

  it('a transaction whose changes make one ~18 MB frame reaches a reading subscriber, live and replayed on resume; one frame is not a backlog', async () => {
    const projectId = await createProject(t);
    const inProject = {
      collection: 'tasks',
      filters: [{ type: 'field', field: 'projectId', operator: 'eq', value: projectId }],
    };
    const c = await WsClient.open(t.ws, t.token(user()));
    const sub = await c.subscribe(inProject);
    const BIG = 36;
    const ids = await saveBigTasks(t, projectId, BIG);
    const got = await c.waitChanges(sub, BIG, 30_000);
    expect(got.map((x) => x.documentId)).toEqual(ids);
    expect(c.closed).toBeUndefined();

    // a client that resumes from before the transaction gets it again, and stays
    const again = await WsClient.open(t.ws, t.token(user()));
    const resumed = await again.subscribe(inProject, {
      resumeFrom: String(Number(got[0].seq) - 1),
    });
    const replayed = await again.waitChanges(resumed, BIG, 30_000);
    expect(replayed.map((x) => x.documentId)).toEqual(ids);
    const small = await seedTask(t, { title: 'after' }, projectId);
    const [next] = await again.waitChanges(resumed, BIG + 1, 30_000).then((all) => all.slice(BIG));
    expect(next.documentId).toBe(small.id);
    expect(again.closed).toBeUndefined();
    c.close();
    again.close();
  });
});

describe('WebSocket heartbeat [sqlite]', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp('sqlite', { HEARTBEAT_INTERVAL_MS: '1000' });
  });
  afterAll(() => t?.close());

  it('pings every interval; a client that never answers is terminated after two missed pongs', async () => {
    const healthy = await WsClient.open(t.ws, t.token(user()));
    expect(healthy.messages[0].data.heartbeatIntervalMs).toBe(1000);
    const silent = await WsClient.connect(t.ws, t.token(user()), { autoPong: false });
    let silentPings = 0;
    let healthyPings = 0;
    silent.socket.on('ping', () => silentPings++);
    healthy.socket.on('ping', () => healthyPings++);
    const closed = await silent.waitClose(8000);
    expect(closed.code).toBe(1006);
    expect(silentPings).toBeGreaterThanOrEqual(2);
    await waitFor(() => healthyPings >= 4, 'four pings to the healthy client', 8000);
    expect(healthy.closed).toBeUndefined();
    await expectUsable(healthy);
    const text = (await t.api(USERS.alice, 'GET', '/metrics')).body as string;
    expect(
      metric(text, 'realtime_dropped_connections_total', { reason: 'heartbeat_timeout' }),
    ).toBe(1);
    healthy.close();
  });

  it('pings leave between change frames without breaking one: every change arrives, in order', async () => {
    const c = await WsClient.open(t.ws, t.token(user()));
    let pings = 0;
    c.socket.on('ping', () => pings++);
    const subId = await c.subscribe({ collection: 'tasks' });
    const task = await seedTask(t, { title: 'beat 0' });
    // writes spread over more than two intervals, so that pings fall among the frames
    let writes = 1;
    const until = Date.now() + 2500;
    while (Date.now() < until || pings < 2) {
      await patchTask(t, task.id, { title: `beat ${writes++}` });
    }
    const changes = await c.waitChanges(subId, writes);
    expect(changes.map((x) => (x.document as { title: string }).title)).toEqual(
      Array.from({ length: writes }, (_, i) => `beat ${i}`),
    );
    expect(pings).toBeGreaterThanOrEqual(2);
    await expectUsable(c);
    c.close();
  });
});

describe('WebSocket connection attempts per IP [sqlite]', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp('sqlite', { CONNECTIONS_PER_IP_PER_MINUTE: '3' });
  });
  afterAll(() => t?.close());

  /** An upgrade that is refused: its status and Retry-After. */
  const refusedUpgrade = () => {
    const socket = new WebSocket(`${t.ws}?access_token=${t.token(user())}`);
    return new Promise<{ status?: number; retryAfter?: string }>((resolve, reject) => {
      socket.once('open', () => reject(new Error('the upgrade was accepted')));
      socket.once('unexpected-response', (_req, res) =>
        resolve({ status: res.statusCode, retryAfter: res.headers['retry-after'] as string }),
      );
      socket.once('error', reject);
    });
  };

  it('answers HTTP 429 before the upgrade past CONNECTIONS_PER_IP_PER_MINUTE, and audits the refusals of the minute once', async () => {
    const clients = [];
    for (let i = 0; i < 3; i++) clients.push(await WsClient.open(t.ws, t.token(user())));
    const response = await refusedUpgrade();
    expect(response).toEqual({ status: 429, retryAfter: '60' });
    // another refused attempt: the IP's refusals of this minute are audited once
    expect(await refusedUpgrade()).toEqual({ status: 429, retryAfter: '60' });
    const refused = await auditItems(t, 'action=rate_limited');
    expect(refused).toEqual([
      expect.objectContaining({
        action: 'rate_limited',
        outcome: 'failure',
        userId: null,
        ipAddress: '127.0.0.1',
        details: { transport: 'websocket', reason: 'too many connection attempts', limit: 3 },
      }),
    ]);
    for (const c of clients) await expectUsable(c);
    for (const c of clients) c.close();
  });
});

describe('WebSocket graceful shutdown [sqlite]', () => {
  it('sends subscription_ended server_shutdown, then closes 1001', async () => {
    const t = await startTestApp('sqlite');
    const c = await WsClient.open(t.ws, t.token(user()));
    const subs = [
      await c.subscribe({ collection: 'tasks' }),
      await c.subscribe({ collection: 'projects' }),
    ];
    const closing = t.close();
    const closed = await c.waitClose();
    await closing;
    expect(closed.code).toBe(1001);
    const ended = c.messages.filter((m) => m.type === 'subscription_ended');
    expect(
      ended.map((m) => m.data).sort((a, b) => a.subscriptionId.localeCompare(b.subscriptionId)),
    ).toEqual(subs.sort().map((subscriptionId) => ({ subscriptionId, reason: 'server_shutdown' })));
  });
});

describe('WebSocket at scale [sqlite]', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp('sqlite', {
      MAX_CONNECTIONS_PER_USER: '5000',
      CONNECTIONS_PER_IP_PER_MINUTE: '100000',
      MESSAGES_PER_SECOND: '100000',
      MESSAGE_BURST: '100000',
    });
  });
  afterAll(() => t?.close());

  const empty = () =>
    waitFor(
      () => t.app.get(ConnectionRegistry).size === 0 && t.app.get(SubscriptionsService).size === 0,
      'the registry and the subscription index to empty',
      20_000,
    );

  it('1 000 clients connected at once, each subscribed, all receive a change', async () => {
    const task = await seedTask(t, { title: 'fan-out' });
    const load = user();
    const clients: WsClient[] = [];
    const subs: string[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const opened = await Promise.all(
        Array.from({ length: 100 }, () => WsClient.open(t.ws, t.token(load))),
      );
      const ids = await Promise.all(
        opened.map((c, i) =>
          c.subscribe({ collection: 'tasks', documentId: i % 2 ? task.id : undefined }),
        ),
      );
      clients.push(...opened);
      subs.push(...ids);
    }
    expect(t.app.get(ConnectionRegistry).size).toBe(1000);
    const changed = await patchTask(t, task.id, { title: 'fan-out 2' });
    const got = await Promise.all(clients.map((c, i) => c.waitChanges(subs[i], 1, 30_000)));
    for (const [change] of got) {
      expect(change).toMatchObject({ documentId: task.id, event: 'modified' });
      expect(change.document.title).toBe('fan-out 2');
      expect(change.metadata.version).toBe(changed.version);
    }
    for (const c of clients) c.close();
    await empty();
  });

  it('survives a client sending 10 000 garbage frames; it and the others keep working', async () => {
    const task = await seedTask(t, { title: 'garbage' });
    const watchers = await Promise.all(
      Array.from({ length: 20 }, () => WsClient.open(t.ws, t.token(user()))),
    );
    const watchSubs = await Promise.all(
      watchers.map((c) => c.subscribe({ collection: 'tasks', documentId: task.id })),
    );
    const g = await WsClient.open(t.ws, t.token(user()));
    const from = g.messages.length;
    const deepArray = '['.repeat(5000) + ']'.repeat(5000);
    const deepObject = '{"a":'.repeat(3000) + '1' + '}'.repeat(3000);
    const frames: (string | Buffer)[] = [
      Buffer.from([0, 1, 2, 255, 254]),
      Buffer.alloc(30_000, 7),
      'not json at all',
      '{"type":',
      '\u0000\u0001garbage',
      deepArray,
      `{"type":"subscribe","id":"d1","data":{"query":${deepObject}}}`,
      `{"type":"subscribe","id":"d2","data":{"query":{"collection":"tasks","filters":[{"type":"field","field":"title","operator":"in","value":${deepArray}}]}}}`,
      `{"type":"${'t'.repeat(60_000)}"}`,
      JSON.stringify({ type: 'ping', junk: 'j'.repeat(60_000) }),
      '{"type":42}',
      '{"type":"ping","id":{"x":1}}',
      '{"type":"subscribe","data":[1,2,3]}',
      '{"type":"unsubscribe","data":{"subscriptionId":{"$ne":null}}}',
      '{"__proto__":{"type":"ping"}}',
      '{"type":"subscribe","data":{"query":{"collection":"tasks","__proto__":{"admin":true}}}}',
      '{"type":"subscribe","data":{"query":{"collection":"tasks","filters":"drop table"}}}',
      '{"type":"auth","data":{"token":["a"]}}',
      '{"type":"get_subscriptions","data":"x"}',
      'x'.repeat(60_000),
    ];
    const count = 10_000;
    let changedMidway: Promise<unknown> | undefined;
    for (let i = 0; i < count; i++) {
      g.socket.send(frames[i % frames.length]);
      if (i === count / 2) changedMidway = patchTask(t, task.id, { title: 'during garbage' });
      if (i % 500 === 0) await new Promise((r) => setImmediate(r));
    }
    await changedMidway;
    // every frame was answered (an error, or a pong for the well-formed ping)
    await waitFor(() => g.messages.length - from >= count, 'an answer to every frame', 60_000);
    const answers = since(g, from);
    expect(answers).toHaveLength(count);
    const codes = new Set(answers.filter((m) => m.type === 'error').map((m) => m.data.code));
    expect(codes).not.toContain('internal');
    expect(
      [...codes].every((c) =>
        ['invalid_message', 'invalid_query', 'unknown_type', 'not_found', 'forbidden'].includes(c),
      ),
    ).toBe(true);
    expect(g.closed).toBeUndefined();
    // the garbage client itself still works
    const own = await g.subscribe({ collection: 'tasks', documentId: task.id });
    await patchTask(t, task.id, { title: 'after garbage' });
    await g.waitChanges(own, 1);
    for (let i = 0; i < watchers.length; i++) {
      const got = await watchers[i].waitChanges(watchSubs[i], 2);
      expect(got.map((x) => x.document.title)).toEqual(['during garbage', 'after garbage']);
    }
    // the audit log kept working: the refused subscriptions and the later ones are stored
    const audited = await auditItems(t, `connectionId=${g.messages[0].data.connectionId}`);
    const actions = audited.map((x) => x.action);
    expect(actions).toContain('subscription_creation_failed');
    expect(actions).toContain('subscription_created');
    for (const c of [...watchers, g]) c.close();
    await empty();
  });

  it('2 000 connect/subscribe/disconnect cycles leave the registry and the index empty', async () => {
    await empty();
    const me = user();
    let cycles = 0;
    const worker = async () => {
      while (cycles < 2000) {
        cycles++;
        const c = await WsClient.open(t.ws, t.token(me));
        await c.subscribe({ collection: 'tasks' });
        await c.subscribe({ collection: 'projects', includeInitialData: true });
        c.close();
        await c.waitClose();
      }
    };
    await Promise.all(Array.from({ length: 20 }, worker));
    expect(cycles).toBeGreaterThanOrEqual(2000);
    await empty();
    const text = (await t.api(USERS.alice, 'GET', '/metrics')).body as string;
    expect(metric(text, 'realtime_connections', { transport: 'websocket' })).toBe(0);
    expect(metric(text, 'realtime_subscriptions')).toBe(0);
  });
});
