import type { PendingWrite } from './types';

/**
 * Where pending writes live until the server has them. Browsers use IndexedDB so a reload
 * keeps them ({@link IndexedDbQueueStorage}); Node and tests use {@link MemoryQueueStorage}.
 * Several tabs may share one storage: `load` must return what any of them stored.
 */
export interface QueueStorage {
  load(): Promise<PendingWrite[]>;
  put(write: PendingWrite): Promise<void>;
  remove(opId: string): Promise<void>;
}

export class MemoryQueueStorage implements QueueStorage {
  private readonly writes = new Map<string, PendingWrite>();

  async load(): Promise<PendingWrite[]> {
    return [...this.writes.values()].map((w) => structuredClone(w));
  }

  async put(write: PendingWrite): Promise<void> {
    this.writes.set(write.opId, structuredClone(write));
  }

  async remove(opId: string): Promise<void> {
    this.writes.delete(opId);
  }
}

/**
 * What sending one write came to:
 * `settled` (applied, conflict resolved or refused for good: it leaves the queue),
 * `offline` (the network is gone: stop and keep it),
 * `retry` (a transient failure such as 503: stop, keep it, try again after `delayMs`).
 */
export type SendResult =
  { kind: 'settled' } | { kind: 'offline' } | { kind: 'retry'; delayMs?: number };

export interface DrainResult {
  sent: number;
  remaining: number;
  stoppedBy: 'offline' | 'retry' | null;
  retryDelayMs?: number;
}

export function sortWrites(writes: PendingWrite[]): PendingWrite[] {
  return writes.sort((a, b) => a.order - b.order || (a.opId < b.opId ? -1 : 1));
}

/**
 * Writes leave strictly in the order they were made, one at a time: a later edit of the
 * same task must not overtake an earlier one, and its expected `version` depends on it.
 * The first write that cannot be sent stops the drain; nothing behind it is attempted.
 */
export class OfflineQueue {
  private running: Promise<DrainResult> | null = null;
  private again = false;

  constructor(
    private readonly storage: QueueStorage,
    private readonly send: (write: PendingWrite) => Promise<SendResult>,
  ) {}

  async enqueue(write: PendingWrite): Promise<void> {
    await this.storage.put(write);
  }

  async pending(): Promise<PendingWrite[]> {
    return sortWrites(await this.storage.load());
  }

  /**
   * Sends every stored write in order. Concurrent calls share one pass, and a call made
   * during a pass causes one more, so a write enqueued meanwhile is not left behind.
   */
  drain(): Promise<DrainResult> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      let total = 0;
      try {
        for (;;) {
          this.again = false;
          const result = await this.pass();
          total += result.sent;
          if (result.stoppedBy || !this.again) return { ...result, sent: total };
        }
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }

  /**
   * Re-reads the storage before each write: sending one may rewrite those behind it (a
   * created document's real id, the version an edit now builds on), and other tabs may
   * have added writes meanwhile.
   */
  private async pass(): Promise<DrainResult> {
    let sent = 0;
    for (;;) {
      const writes = await this.pending();
      const write = writes[0];
      if (!write) return { sent, remaining: 0, stoppedBy: null };
      const result = await this.send(write);
      if (result.kind !== 'settled') {
        return {
          sent,
          remaining: writes.length,
          stoppedBy: result.kind,
          retryDelayMs: result.kind === 'retry' ? result.delayMs : undefined,
        };
      }
      await this.storage.remove(write.opId);
      sent++;
    }
  }
}
