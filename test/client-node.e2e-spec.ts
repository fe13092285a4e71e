import { ChangeLogService, ConnectionRegistry } from '@app/realtime';
import { createRealtimeClient, RealtimeClient } from '@app/client';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { seedTask, startTestApp, TestApp, USERS } from './utils/app';
import { waitFor } from './utils/wait';

/**
 * The client library in Node against the real app: token lifetime (in-band refresh, and
 * 4001 then reconnect with a new token) and `resync_required` after the log moved on.
 */
describe('client library in Node: token lifetime and resync', () => {
  let t: TestApp;
  let client: RealtimeClient | undefined;
  beforeAll(async () => (t = await startTestApp('sqlite', { CHANGE_LOG_MAX_ROWS: '5' })));
  afterEach(() => client?.close());
  afterAll(() => t?.close());

  const make = (getToken: () => Promise<string> | string, refreshBeforeExpiryMs: number) =>
    createRealtimeClient({
      url: t.http,
      getToken,
      transport: 'websocket',
      crossTab: false,
      refreshBeforeExpiryMs,
      reconnect: { initialDelayMs: 50, maxDelayMs: 200, factor: 2, jitter: 0 },
      WebSocketImpl: WebSocket as never,
      EventSourceImpl: EventSource as never,
    });

  it('refreshes a short-lived token in band before it expires: the connection stays, changes keep coming', async () => {
    const task = await seedTask(t);
    let issued = 0;
    client = make(() => {
      issued++;
      return t.token(USERS.alice, { expiresInSeconds: 4 });
    }, 3000);
    const reconnects: number[] = [];
    client.on('reconnecting', (d) => reconnects.push(d.closeCode ?? 0));
    const live = client.subscribe({
      collection: 'tasks',
      documentId: task.id,
      includeInitialData: true,
    });
    await waitFor(() => live.status === 'live', 'the query to go live');
    await new Promise((r) => setTimeout(r, 5500)); // past the first token's exp
    await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, { title: 'after expiry' });
    await waitFor(
      () => live.documents[0]?.title === 'after expiry',
      'the change after the first token expired',
    );
    expect(issued).toBeGreaterThanOrEqual(2);
    expect(reconnects).toEqual([]);
  });

  it('on a 4001 close it fetches a new token and resumes; past retention it resyncs to the server state', async () => {
    const task = await seedTask(t);
    let calls = 0;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let asked!: () => void;
    const reconnecting = new Promise<void>((resolve) => (asked = resolve));
    client = make(async () => {
      calls++;
      if (calls === 1) return t.token(USERS.alice);
      asked();
      await released; // hold the reconnect while the log moves past retention
      return t.token(USERS.alice);
    }, 30_000);
    let connectionId: string | undefined;
    client.on('open', (d) => (connectionId = d.connectionId));
    const statuses: string[] = [];
    const live = client.subscribe(
      { collection: 'tasks', documentId: task.id, includeInitialData: true },
      { onStatus: (status) => void statuses.push(status) },
    );
    await waitFor(() => live.status === 'live' && connectionId, 'the query to go live');
    // the server ends the connection as it does at a token's exp: error token_expired, close 4001
    const registry = t.app.get(ConnectionRegistry);
    const connection = registry.get(connectionId as string);
    expect(connection).toBeDefined();
    connection!.emitRaw(
      'error',
      JSON.stringify({ code: 'token_expired', message: 'the access token expired' }),
    );
    registry.drop(connection!, 4001, 'token expired', 'token_expired');
    await reconnecting; // the client asks for a new token (the old one is never reused)
    for (let i = 0; i < 10; i++) {
      await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, { title: `gap ${i}` });
    }
    await t.app.get(ChangeLogService).prune();
    release();
    await waitFor(() => live.documents[0]?.title === 'gap 9', 'the resynced document', 15_000);
    expect(statuses).toContain('resyncing');
    const server = await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`);
    expect(live.documents).toEqual([
      expect.objectContaining({ title: 'gap 9', version: server.body.version }),
    ]);
  });
});

/**
 * A create whose answer is lost (the request reached the server, the response did not
 * reach the client) is sent again by the queue, and still makes one document: the client
 * sends its write id as `Idempotency-Key`, the app answers the repeat with the document.
 */
describe('client library in Node: a create whose answer was lost', () => {
  let t: TestApp;
  let client: RealtimeClient | undefined;
  beforeAll(async () => (t = await startTestApp('sqlite')));
  afterAll(async () => {
    client?.close();
    await t?.close();
  });

  it('is sent again with the same key and applied once', async () => {
    const { projectId } = await seedTask(t);
    const posts: { key: string | null; status?: number }[] = [];
    const fetchImpl = (async (url: string, init?: RequestInit) => {
      const response = await fetch(url, init);
      if (init?.method === 'POST' && String(url).endsWith('/api/tasks')) {
        posts.push({
          key: new Headers(init.headers).get('idempotency-key'),
          status: response.status,
        });
        // the first answer is lost on the way back, after the server committed
        if (posts.length === 1) throw new TypeError('fetch failed');
      }
      return response;
    }) as typeof fetch;
    client = createRealtimeClient({
      url: t.http,
      getToken: () => t.token(USERS.bob),
      transport: 'websocket',
      crossTab: false,
      fetchImpl,
      WebSocketImpl: WebSocket as never,
      EventSourceImpl: EventSource as never,
    });
    const outcome = await client
      .collection('tasks')
      .create({ projectId, title: 'answer lost', department: 'eng' });
    expect(outcome.status).toBe('applied');
    expect(posts).toHaveLength(2);
    expect(posts[0].key).toBeTruthy();
    expect(posts[1].key).toBe(posts[0].key);
    expect(posts.map((p) => p.status)).toEqual([201, 201]);
    const list = await t.api(USERS.alice, 'GET', `/api/tasks?projectId=${projectId}&limit=200`);
    const made = (list.body.items as any[]).filter((d) => d.title === 'answer lost');
    expect(made).toHaveLength(1);
    expect(outcome).toMatchObject({ document: { id: made[0].id } });
  }, 30_000);
});
