import WebSocket from 'ws';

export interface Msg {
  type: string;
  id?: string;
  data?: any;
}

/** A real `ws` client that records every message and can wait for one. */
export class WsClient {
  readonly messages: Msg[] = [];
  closed?: { code: number; reason: string };
  private readonly bySub = new Map<string, any[]>();
  private readonly listeners = new Set<() => boolean>();
  private waiters: { pred: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];
  private closeWaiters: ((c: { code: number; reason: string }) => void)[] = [];

  constructor(readonly socket: WebSocket) {
    socket.on('message', (raw) => {
      const msg = JSON.parse(raw.toString()) as Msg;
      this.messages.push(msg);
      if (msg.type === 'data_change') {
        const list = this.bySub.get(msg.data.subscriptionId) ?? [];
        list.push(...msg.data.changes);
        this.bySub.set(msg.data.subscriptionId, list);
      }
      for (const listener of [...this.listeners]) listener();
      this.waiters = this.waiters.filter((w) => {
        if (w.pred(msg)) {
          w.resolve(msg);
          return false;
        }
        return true;
      });
    });
    socket.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.closeWaiters.forEach((f) => f(this.closed!));
    });
    socket.on('error', () => undefined);
  }

  /** Connects with a token in the query string (or none). */
  static async connect(
    url: string,
    token?: string,
    options: WebSocket.ClientOptions = {},
  ): Promise<WsClient> {
    const socket = new WebSocket(
      token ? `${url}?access_token=${encodeURIComponent(token)}` : url,
      options,
    );
    const client = new WsClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
      socket.once('unexpected-response', (_req, res) =>
        reject(new Error(`HTTP ${res.statusCode}`)),
      );
    });
    return client;
  }

  /** Connects and waits for connection_established. */
  static async open(url: string, token: string): Promise<WsClient> {
    const c = await WsClient.connect(url, token);
    await c.next((m) => m.type === 'connection_established');
    return c;
  }

  send(type: string, data?: unknown, id?: string): void {
    this.socket.send(
      JSON.stringify({
        type,
        ...(id !== undefined ? { id } : {}),
        ...(data !== undefined ? { data } : {}),
      }),
    );
  }

  /** The first recorded message (past or future) that matches, within `timeoutMs`. */
  next(pred: (m: Msg) => boolean, timeoutMs = 10_000): Promise<Msg> {
    const seen = this.messages.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `timed out waiting for a message; got: ${JSON.stringify(this.messages.slice(-5)).slice(0, 800)}`,
            ),
          ),
        timeoutMs,
      );
      this.waiters.push({
        pred,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }

  /** A request and its reply (or error) with the same id. */
  async request(type: string, data?: unknown, timeoutMs?: number): Promise<Msg> {
    const id = `r${Math.random().toString(36).slice(2)}`;
    this.send(type, data, id);
    return this.next((m) => m.id === id, timeoutMs);
  }

  /** Subscribes and returns the subscription id. */
  async subscribe(query: unknown, extra: Record<string, unknown> = {}): Promise<string> {
    const reply = await this.request('subscribe', { query, ...extra });
    if (reply.type !== 'subscription_created')
      throw new Error(`subscribe failed: ${JSON.stringify(reply)}`);
    return reply.data.subscriptionId as string;
  }

  /** Every change delivered to a subscription so far, in arrival order. */
  changes(subscriptionId: string): any[] {
    return this.bySub.get(subscriptionId) ?? [];
  }

  /** Waits until at least `count` changes have arrived for the subscription. */
  waitChanges(subscriptionId: string, count: number, timeoutMs = 15_000): Promise<any[]> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const got = this.changes(subscriptionId);
        if (got.length < count) return false;
        cleanup();
        resolve(got);
        return true;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `expected ${count} changes on ${subscriptionId}, got ${this.changes(subscriptionId).length}`,
          ),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  waitClose(timeoutMs = 10_000): Promise<{ code: number; reason: string }> {
    if (this.closed) return Promise.resolve(this.closed);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for close')), timeoutMs);
      this.closeWaiters.push((c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
  }

  close(): void {
    this.socket.close();
  }
}
