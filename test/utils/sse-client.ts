import { EventSource } from 'eventsource';

/** One SSE event as the browser API shows it: its name, parsed data and `lastEventId`. */
export interface SseEvent {
  type: string;
  data: any;
  lastEventId: string;
}

const TYPES = [
  'connection_established',
  'subscription_created',
  'initial_data',
  'data_change',
  'subscription_ended',
  'resync_required',
  'unsubscribed',
  'error',
  'heartbeat',
];

/**
 * A real EventSource (eventsource@4) that records every named event and can wait for one.
 * Transport errors of the EventSource itself (stream ended, non-200) are kept apart in
 * `failures`, distinct from the server's `error` events.
 */
export class SseClient {
  private static readonly live = new Set<SseClient>();
  readonly events: SseEvent[] = [];
  readonly failures: { code?: number; message?: string }[] = [];
  readonly source: EventSource;
  private readonly listeners = new Set<() => void>();

  constructor(url: string, options: { headers?: Record<string, string> } = {}) {
    SseClient.live.add(this);
    this.source = new EventSource(url, {
      fetch: (input, init) =>
        fetch(input, { ...init, headers: { ...init?.headers, ...options.headers } }),
    });
    for (const type of TYPES) {
      this.source.addEventListener(type, (e: Event) => {
        if (!(e instanceof MessageEvent)) {
          const err = e as Event & { code?: number; message?: string };
          this.failures.push({ code: err.code, message: err.message });
        } else {
          this.events.push({ type, data: JSON.parse(e.data), lastEventId: e.lastEventId });
        }
        for (const listener of [...this.listeners]) listener();
      });
    }
  }

  /** Opens a stream with the token as `access_token` and waits for connection_established. */
  static async open(
    base: string,
    token: string,
    queries: unknown[] = [],
    headers?: Record<string, string>,
  ): Promise<SseClient> {
    const params = new URLSearchParams({ access_token: token });
    for (const q of queries) params.append('subscribe', JSON.stringify(q));
    const client = new SseClient(`${base}/realtime/sse?${params}`, { headers });
    await client.next((e) => e.type === 'connection_established');
    return client;
  }

  get connectionId(): string {
    const first = this.events.find((e) => e.type === 'connection_established');
    if (!first) throw new Error('no connection_established yet');
    return first.data.connectionId as string;
  }

  /** Resolves when `check` returns a value (checked now and after every event). */
  until<T>(check: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const run = () => {
        const value = check();
        if (value === undefined) return;
        done();
        resolve(value);
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(
            `timed out waiting for ${what}; last events: ${JSON.stringify(this.events.slice(-4)).slice(0, 800)}; failures: ${JSON.stringify(this.failures)}`,
          ),
        );
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(run);
      };
      this.listeners.add(run);
      run();
    });
  }

  /** The first event (past or future) that matches. */
  next(pred: (e: SseEvent) => boolean, timeoutMs?: number): Promise<SseEvent> {
    return this.until(() => this.events.find(pred), 'an SSE event', timeoutMs);
  }

  /** Every change delivered to a subscription so far, in arrival order. */
  changes(subscriptionId: string): any[] {
    return this.events
      .filter((e) => e.type === 'data_change' && e.data.subscriptionId === subscriptionId)
      .flatMap((e) => e.data.changes);
  }

  waitChanges(subscriptionId: string, count: number, timeoutMs = 15_000): Promise<any[]> {
    return this.until(
      () => {
        const got = this.changes(subscriptionId);
        return got.length >= count ? got : undefined;
      },
      `${count} changes on ${subscriptionId}`,
      timeoutMs,
    );
  }

  /** The `index`-th transport failure of the EventSource (stream ended, HTTP error). */
  waitFailure(index = 0, timeoutMs?: number): Promise<{ code?: number; message?: string }> {
    return this.until(() => this.failures[index], 'the stream to end', timeoutMs);
  }

  close(): void {
    this.source.close();
    SseClient.live.delete(this);
  }

  /** Closes every client still open (so that none keeps reconnecting after a test). */
  static closeAll(): void {
    for (const client of [...SseClient.live]) client.close();
  }
}
