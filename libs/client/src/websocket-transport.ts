import {
  ABNORMAL_CLOSURE,
  RealtimeRequestError,
  toWebSocketUrl,
  TransportClosedError,
  type SubscribeReply,
  type SubscribeRequest,
  type TransportOptions,
  type TransportSession,
  type WebSocketConstructor,
} from './transport';
import type { ServerMessage } from './types';

interface Pending {
  resolve(message: ServerMessage): void;
  reject(error: Error): void;
}

/**
 * Browsers answer the server's ping frames without telling the page, so a half-open
 * socket (laptop lid closed, Wi-Fi switched) is noticed by sending our own `ping` and
 * giving up when nothing at all has arrived for two heartbeat intervals.
 */
const MISSED_INTERVALS = 2;

export function openWebSocket(
  WebSocketImpl: WebSocketConstructor,
  options: TransportOptions,
): TransportSession {
  const url = `${toWebSocketUrl(options.baseUrl)}${options.realtimePath}/ws?access_token=${encodeURIComponent(options.token)}`;
  const ws = new WebSocketImpl(url);
  const pending = new Map<string, Pending>();
  let nextId = 1;
  let established = false;
  let closed = false;
  let lastMessageAt = Date.now();
  let heartbeat: ReturnType<typeof setInterval> | undefined;

  const finish = (code: number, reason: string): void => {
    if (closed) return;
    closed = true;
    clearInterval(heartbeat);
    for (const p of pending.values()) p.reject(new TransportClosedError());
    pending.clear();
    options.handlers.closed({ code, reason, established });
  };

  const send = (type: string, data?: object): string => {
    const id = `c${nextId++}`;
    ws.send(JSON.stringify(data === undefined ? { type, id } : { type, id, data }));
    return id;
  };

  const request = (type: string, data?: object): Promise<ServerMessage> => {
    if (closed || ws.readyState !== 1) return Promise.reject(new TransportClosedError());
    return new Promise<ServerMessage>((resolve, reject) => {
      pending.set(send(type, data), { resolve, reject });
    });
  };

  ws.onmessage = (event: MessageEvent) => {
    lastMessageAt = Date.now();
    let message: ServerMessage;
    try {
      message = JSON.parse(String(event.data)) as ServerMessage;
    } catch {
      return;
    }
    if (message.type === 'connection_established') {
      established = true;
      const interval = message.data.heartbeatIntervalMs || 30_000;
      heartbeat = setInterval(() => {
        if (Date.now() - lastMessageAt > interval * MISSED_INTERVALS) {
          ws.close();
          finish(ABNORMAL_CLOSURE, 'no message from the server within two heartbeat intervals');
        } else if (ws.readyState === 1) {
          send('ping', { ts: Date.now() });
        }
      }, interval);
      options.handlers.established(message.data);
    }
    const waiter = message.id ? pending.get(message.id) : undefined;
    if (waiter && message.id) {
      pending.delete(message.id);
      if (message.type === 'error') waiter.reject(new RealtimeRequestError(message.data));
      else waiter.resolve(message);
    }
    options.handlers.message(message);
  };
  ws.onclose = (event: CloseEvent) => finish(event.code, event.reason);
  // An error event is always followed by close, which carries the code that matters.
  ws.onerror = () => undefined;

  return {
    kind: 'websocket',
    async subscribe(req: SubscribeRequest): Promise<SubscribeReply> {
      const data: Record<string, unknown> = { query: req.query };
      if (req.tabId) data.tabId = req.tabId;
      if (req.resumeFrom != null) data.resumeFrom = req.resumeFrom;
      const reply = await request('subscribe', data);
      if (reply.type !== 'subscription_created') throw new TransportClosedError();
      return reply.data;
    },
    async unsubscribe(subscriptionId: string): Promise<void> {
      await request('unsubscribe', { subscriptionId });
    },
    async reauthenticate(token: string): Promise<void> {
      await request('auth', { token });
    },
    close(code = 1000, reason = 'client closed'): void {
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
      finish(code, reason);
    },
  };
}
