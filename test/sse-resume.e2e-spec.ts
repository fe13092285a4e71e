import { seedTask, startTestApp, TestApp, USERS } from './utils/app';
import { SseClient } from './utils/sse-client';

/**
 * `Last-Event-ID` resumes every subscription of a stream from one seq: the ids the server
 * writes must be safe for all of them (found in review: replays of two subscriptions went
 * out in non-increasing order, and a throttle window was skipped).
 */
/** What an EventSource sends as Last-Event-ID on reconnect: the last id the stream carried. */
const lastSeenId = (client: SseClient): string =>
  client.events
    .map((e) => e.lastEventId)
    .filter((id) => id !== '')
    .pop() ?? '';

/** The ids of the stream's first two subscriptions, once both are created. */
const twoSubscriptions = (client: SseClient): Promise<string[]> =>
  client.until(() => {
    const subs = client.events.filter((e) => e.type === 'subscription_created');
    return subs.length === 2 ? subs.map((e) => e.data.subscriptionId as string) : undefined;
  }, 'two subscriptions');

/** The id of the stream's subscription to one document. */
const subscriptionTo = async (client: SseClient, documentId: string): Promise<string> =>
  (
    await client.next(
      (e) => e.type === 'subscription_created' && e.data.query.documentId === documentId,
    )
  ).data.subscriptionId;

describe('SSE Last-Event-ID across several subscriptions', () => {
  let t: TestApp;
  const retitle = async (id: string, title: string) =>
    expect((await t.api(USERS.alice, 'PATCH', `/api/tasks/${id}`, { title })).status).toBe(200);

  beforeAll(async () => {
    t = await startTestApp('sqlite');
  });
  afterAll(async () => {
    SseClient.closeAll();
    await t?.close();
  });

  it('resuming from the last event id repeats no change', async () => {
    const a = await seedTask(t, { title: 'A' });
    const b = await seedTask(t, { title: 'B' }, a.projectId);
    await retitle(a.id, 'A2');

    const qa = { collection: 'tasks', documentId: a.id };
    const qb = { collection: 'tasks', documentId: b.id };
    const first = await SseClient.open(t.http, t.token(USERS.alice), [qa, qb], {
      'last-event-id': '0',
    });
    const [subA, subB] = await twoSubscriptions(first);
    const gotA = await first.waitChanges(subA, 2);
    await first.waitChanges(subB, 1);
    const lastId = lastSeenId(first);
    first.close();
    const maxA = Math.max(...gotA.map((c) => Number(c.seq)));
    expect(Number(lastId)).toBeGreaterThanOrEqual(maxA);

    const second = await SseClient.open(t.http, t.token(USERS.alice), [qa, qb], {
      'last-event-id': lastId,
    });
    const subA2 = await subscriptionTo(second, a.id);
    // a live change arrives once; nothing received on the first stream comes again
    await retitle(a.id, 'A3');
    const again = await second.waitChanges(subA2, 1);
    second.close();
    expect(again.map((c) => c.document.title)).toEqual(['A3']);
    expect(gotA.map((c) => c.seq)).not.toContain(again[0].seq);
  });

  it('a throttled subscription loses no change when the stream resumes from the last event id', async () => {
    const a = await seedTask(t, { title: 'A' });
    const b = await seedTask(t, { title: 'B' }, a.projectId);
    const qa = { collection: 'tasks', documentId: a.id, throttleMs: 3000 };
    const qb = { collection: 'tasks', documentId: b.id };
    const first = await SseClient.open(t.http, t.token(USERS.alice), [qa, qb]);
    const [subA, subB] = await twoSubscriptions(first);
    // open a throttle window on A (its first change flushes at once) ...
    await retitle(a.id, 'A1');
    await first.waitChanges(subA, 1);
    // ... so that this change of A waits in the window, while B's later change goes out now
    await retitle(a.id, 'A2');
    await retitle(b.id, 'B2');
    await first.waitChanges(subB, 1);
    const lastId = lastSeenId(first);
    first.close(); // the stream drops before A's window flushes

    const second = await SseClient.open(t.http, t.token(USERS.alice), [qa, qb], {
      'last-event-id': lastId,
    });
    const subA2 = await subscriptionTo(second, a.id);
    const replayed = await second.waitChanges(subA2, 1);
    second.close();
    // A2 waited in A's window when the first stream dropped: the resume brings it
    expect(replayed.map((c) => c.document.title)).toContain('A2');
    const seenA = [...first.changes(subA), ...replayed].map((c) => c.document?.title);
    expect(seenA.filter((x) => x === 'A1')).toHaveLength(1);
  });
});
