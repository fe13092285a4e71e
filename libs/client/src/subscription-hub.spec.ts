import { normalizeQuery, queryKey } from './query';
import { SubscriptionHub, type HubMessage } from './subscription-hub';
import type { SubscribeReply, SubscribeRequest, TransportSession } from './transport';
import type { ServerMessage, WireChange } from './types';

/** A session double that records requests and answers them when told to. */
class FakeSession implements TransportSession {
  readonly kind = 'websocket' as const;
  readonly subscribes: SubscribeRequest[] = [];
  readonly unsubscribes: string[] = [];
  private next = 1;
  private readonly replies: ((reply: SubscribeReply) => void)[] = [];

  subscribe(request: SubscribeRequest): Promise<SubscribeReply> {
    this.subscribes.push(request);
    return new Promise((resolve) => this.replies.push(resolve));
  }
  /** answers the oldest open subscribe; returns its subscription id */
  async answer(): Promise<string> {
    const resolve = this.replies.shift();
    if (!resolve) throw new Error('no open subscribe');
    const subscriptionId = `sub-${this.next++}`;
    resolve({ subscriptionId, query: this.subscribes[0].query as never });
    await Promise.resolve();
    return subscriptionId;
  }
  async unsubscribe(subscriptionId: string): Promise<void> {
    this.unsubscribes.push(subscriptionId);
  }
  close(): void {}
}

const todo = normalizeQuery({
  collection: 'tasks',
  includeInitialData: true,
  filters: [{ type: 'field', field: 'status', operator: 'eq', value: 'todo' }],
});
const key = queryKey(todo);

const change = (seq: string, id: string): WireChange => ({
  seq,
  operation: 'insert',
  event: 'added',
  database: 'default',
  collection: 'tasks',
  documentId: id,
  document: { id },
  changedFields: [],
});

function setup() {
  const out: HubMessage[] = [];
  const hub = new SubscriptionHub('leader-tab', (m) => out.push(m));
  const session = new FakeSession();
  return { hub, out, session };
}

const initial = (subscriptionId: string, seq: string, ids: string[]): ServerMessage => ({
  type: 'initial_data',
  data: {
    subscriptionId,
    documents: ids.map((id) => ({ id })),
    chunkIndex: 0,
    totalChunks: 1,
    isLast: true,
    seq,
  },
});

const changes = (subscriptionId: string, ...list: WireChange[]): ServerMessage => ({
  type: 'data_change',
  data: { subscriptionId, changes: list },
});

describe('SubscriptionHub', () => {
  it('makes one server subscription for identical queries of several tabs', async () => {
    const { hub, out, session } = setup();
    hub.attach(session);
    hub.want({ tabId: 'a', key, query: todo });
    hub.want({ tabId: 'b', key, query: todo });
    expect(session.subscribes).toHaveLength(1);
    const id = await session.answer();
    hub.handle(initial(id, '10', ['t1']));
    expect(out).toContainEqual({ type: 'snapshot', key, documents: [{ id: 't1' }], seq: '10' });

    // A tab that joins later gets the hub's result without a new server subscription.
    hub.want({ tabId: 'c', key, query: todo });
    expect(session.subscribes).toHaveLength(1);
    expect(out).toContainEqual({
      type: 'snapshot',
      key,
      documents: [{ id: 't1' }],
      seq: '10',
      to: 'c',
    });
  });

  it('unsubscribes on the server only when the last tab lets go', async () => {
    const { hub, session } = setup();
    hub.attach(session);
    hub.want({ tabId: 'a', key, query: todo });
    hub.want({ tabId: 'b', key, query: todo });
    const id = await session.answer();
    hub.unwant('a', key);
    expect(session.unsubscribes).toEqual([]);
    hub.dropTab('b');
    expect(session.unsubscribes).toEqual([id]);
    expect(hub.keys()).toEqual([]);
  });

  it('resumes from the last seq it saw after a reconnect', async () => {
    const { hub, session } = setup();
    hub.attach(session);
    hub.want({ tabId: 'a', key, query: todo });
    const id = await session.answer();
    hub.handle(initial(id, '10', []));
    hub.handle(changes(id, change('11', 'x'), change('12', 'y')));
    hub.detach();

    const again = new FakeSession();
    hub.attach(again);
    expect(again.subscribes).toEqual([expect.objectContaining({ query: todo, resumeFrom: '12' })]);
  });

  it('forwards every change so that tabs behind the hub can catch up', async () => {
    const { hub, out, session } = setup();
    hub.attach(session);
    hub.want({ tabId: 'a', key, query: todo });
    const id = await session.answer();
    hub.handle(initial(id, '10', []));
    hub.handle(changes(id, change('11', 'x')));
    hub.handle(changes(id, change('11', 'x')));
    expect(out.filter((m) => m.type === 'changes')).toHaveLength(2);
  });

  it('after a hand-off, is seeded by a tab and reaches back to the slowest tab', async () => {
    const { hub, session } = setup();
    // The new leader had the query at seq 20, another tab only at 15.
    hub.want({
      tabId: 'leader',
      key,
      query: todo,
      snapshot: { documents: [{ id: 'a' }], seq: '20' },
    });
    hub.attach(session);
    expect(session.subscribes[0].resumeFrom).toBe('20');
    const first = await session.answer();
    hub.want({ tabId: 'slow', key, query: todo, snapshot: { documents: [], seq: '15' } });
    expect(session.subscribes[1].resumeFrom).toBe('15');
    await session.answer();
    // The overlapping, older subscription is dropped once the new one exists.
    expect(session.unsubscribes).toEqual([first]);
  });

  it('takes the lowest seq reported before the connection opens', () => {
    const { hub, session } = setup();
    hub.want({ tabId: 'a', key, query: todo, snapshot: { documents: [], seq: '30' } });
    hub.want({ tabId: 'b', key, query: todo, snapshot: { documents: [], seq: '25' } });
    hub.want({ tabId: 'c', key, query: todo, snapshot: { documents: [], seq: '28' } });
    hub.attach(session);
    expect(session.subscribes).toHaveLength(1);
    expect(session.subscribes[0].resumeFrom).toBe('25');
  });

  it('on resync_required clears the cache and takes the fresh snapshot that follows', async () => {
    const { hub, out, session } = setup();
    hub.attach(session);
    hub.want({ tabId: 'a', key, query: todo });
    const id = await session.answer();
    hub.handle(initial(id, '10', ['old']));
    hub.handle({ type: 'resync_required', data: { subscriptionId: id } });
    expect(out).toContainEqual({ type: 'status', key, status: 'resyncing' });
    hub.handle(initial(id, '500', ['new']));
    expect(out.at(-1)).toEqual({ type: 'snapshot', key, documents: [{ id: 'new' }], seq: '500' });
  });

  it('re-subscribes with initial data when a query without it must resync', async () => {
    const { hub, session } = setup();
    const bare = normalizeQuery({ collection: 'tasks' });
    const bareKey = queryKey(bare);
    hub.attach(session);
    hub.want({ tabId: 'a', key: bareKey, query: bare });
    const id = await session.answer();
    hub.handle({ type: 'resync_required', data: { subscriptionId: id } });
    expect(session.subscribes[1]).toEqual(
      expect.objectContaining({ query: { ...bare, includeInitialData: true } }),
    );
    expect(session.subscribes[1].resumeFrom).toBeUndefined();
  });

  it('keeps events that arrive before the subscribe reply and applies them after it', async () => {
    const { hub, out, session } = setup();
    hub.attach(session);
    hub.want({ tabId: 'a', key, query: todo });
    hub.handle(initial('sub-1', '5', ['early']));
    expect(out.some((m) => m.type === 'snapshot')).toBe(false);
    await session.answer();
    expect(out).toContainEqual({ type: 'snapshot', key, documents: [{ id: 'early' }], seq: '5' });
  });

  it('tells the tabs when the server revokes a subscription', async () => {
    const { hub, out, session } = setup();
    hub.attach(session);
    hub.want({ tabId: 'a', key, query: todo });
    const id = await session.answer();
    hub.handle({ type: 'subscription_ended', data: { subscriptionId: id, reason: 'revoked' } });
    expect(out.at(-1)).toMatchObject({ type: 'status', key, status: 'ended' });
    expect(hub.keys()).toEqual([]);
  });
});
