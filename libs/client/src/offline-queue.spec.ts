import { MemoryQueueStorage, OfflineQueue, type SendResult } from './offline-queue';
import type { PendingWrite } from './types';

let order = 0;
function write(id: string, patch: Record<string, unknown> = {}): PendingWrite {
  order++;
  return {
    opId: id,
    tabId: 't1',
    order,
    createdAt: order,
    collection: 'tasks',
    kind: 'update',
    documentId: 'task-1',
    data: patch,
    version: 1,
    base: null,
    attempts: 0,
  };
}

describe('OfflineQueue', () => {
  it('sends writes in the order they were made, not the order they were stored', async () => {
    const storage = new MemoryQueueStorage();
    const first = write('first');
    const second = write('second');
    const third = write('third');
    await storage.put(third);
    await storage.put(first);
    await storage.put(second);
    const sent: string[] = [];
    const queue = new OfflineQueue(storage, async (w) => {
      sent.push(w.opId);
      return { kind: 'settled' };
    });
    const result = await queue.drain();
    expect(sent).toEqual(['first', 'second', 'third']);
    expect(result).toEqual({ sent: 3, remaining: 0, stoppedBy: null });
    expect(await storage.load()).toEqual([]);
  });

  it('stops at the first write that cannot go out and keeps it and everything behind it', async () => {
    const storage = new MemoryQueueStorage();
    let online = false;
    const sent: string[] = [];
    const queue = new OfflineQueue(storage, async (w): Promise<SendResult> => {
      if (!online) return { kind: 'offline' };
      sent.push(w.opId);
      return { kind: 'settled' };
    });
    await queue.enqueue(write('a'));
    await queue.enqueue(write('b'));
    const offline = await queue.drain();
    expect(offline).toMatchObject({ sent: 0, remaining: 2, stoppedBy: 'offline' });
    expect((await queue.pending()).map((w) => w.opId)).toEqual(['a', 'b']);

    online = true;
    await queue.drain();
    expect(sent).toEqual(['a', 'b']);
  });

  it('survives a reload: a new queue over the same storage replays what is left', async () => {
    const storage = new MemoryQueueStorage();
    const before = new OfflineQueue(storage, async () => ({ kind: 'offline' }));
    await before.enqueue(write('x', { status: 'doing' }));
    await before.enqueue(write('y', { status: 'done' }));
    await before.drain();

    const sent: PendingWrite[] = [];
    const after = new OfflineQueue(storage, async (w) => {
      sent.push(w);
      return { kind: 'settled' };
    });
    await after.drain();
    expect(sent.map((w) => [w.opId, w.data])).toEqual([
      ['x', { status: 'doing' }],
      ['y', { status: 'done' }],
    ]);
  });

  it('reports a transient failure with its delay so the caller can retry', async () => {
    const storage = new MemoryQueueStorage();
    const queue = new OfflineQueue(storage, async () => ({ kind: 'retry', delayMs: 1234 }));
    await queue.enqueue(write('a'));
    expect(await queue.drain()).toEqual({
      sent: 0,
      remaining: 1,
      stoppedBy: 'retry',
      retryDelayMs: 1234,
    });
  });

  it('runs one drain at a time and picks up writes enqueued while it runs', async () => {
    const storage = new MemoryQueueStorage();
    const sent: string[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const queue = new OfflineQueue(storage, async (w) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      if (w.opId === 'a') await gate;
      sent.push(w.opId);
      inFlight--;
      return { kind: 'settled' };
    });
    await queue.enqueue(write('a'));
    const first = queue.drain();
    await queue.enqueue(write('b'));
    const second = queue.drain();
    release();
    await Promise.all([first, second]);
    expect(sent).toEqual(['a', 'b']);
    expect(maxInFlight).toBe(1);
    expect(await storage.load()).toEqual([]);
  });

  it('sees rewrites of later writes made while sending an earlier one', async () => {
    const storage = new MemoryQueueStorage();
    const sent: PendingWrite[] = [];
    const queue = new OfflineQueue(storage, async (w) => {
      sent.push(w);
      if (w.opId === 'a') {
        const [, b] = await queue.pending();
        await storage.put({ ...b, version: 2 });
      }
      return { kind: 'settled' };
    });
    await queue.enqueue(write('a'));
    await queue.enqueue(write('b'));
    await queue.drain();
    expect(sent.map((w) => w.version)).toEqual([1, 2]);
  });

  it('keeps stored copies apart from the caller’s objects', async () => {
    const storage = new MemoryQueueStorage();
    const w = write('a', { title: 'one' });
    await storage.put(w);
    (w.data as Record<string, unknown>).title = 'changed';
    expect((await storage.load())[0].data).toEqual({ title: 'one' });
  });
});
