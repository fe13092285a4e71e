import {
  ABNORMAL_CLOSURE,
  RealtimeRequestError,
  TransportClosedError,
  type EventSourceConstructor,
  type SubscribeReply,
  type SubscribeRequest,
  type TransportOptions,
  type TransportSession,
} from './transport';
import { readErrorInfo } from './http';
import type { ServerMessage } from './types';

const SERVER_EVENTS = [
  'connection_established',
  'subscription_created',
  'initial_data',
  'data_change',
  'subscription_ended',
  'resync_required',
  'unsubscribed',
  'error',
  'heartbeat',
] as const;

/** Close code reported when the SSE endpoint refused the token (as WebSocket's 1008). */
export const SSE_AUTH_FAILED = 1008;

/**
 * Server-Sent Events. The stream opens without `subscribe` parameters and every
 * subscription is added with `POST …/subscriptions`: that is the only way to give each
 * subscription its own `resumeFrom` and to learn its id from the answer, because a browser
 * `EventSource` cannot set `Last-Event-ID` on a connection it opens itself.
 */
export function openSse(
  EventSourceImpl: EventSourceConstructor,
  options: TransportOptions,
): TransportSession {
  const base = `${options.baseUrl}${options.realtimePath}/sse`;
  const source = new EventSourceImpl(`${base}?access_token=${encodeURIComponent(options.token)}`);
  let connectionId: string | null = null;
  let closed = false;

  const finish = (code: number, reason: string): void => {
    if (closed) return;
    closed = true;
    source.close();
    options.handlers.closed({ code, reason, established: connectionId !== null });
  };

  for (const type of SERVER_EVENTS) {
    source.addEventListener(type, (event: Event) => {
      const raw = (event as MessageEvent).data;
      // EventSource reports its own failures as `error` events without data; the
      // protocol's `error` message always has data.
      if (typeof raw !== 'string') {
        if (type === 'error') {
          // The `eventsource` package (Node) exposes the HTTP status; browsers do not.
          const status = (event as Event & { code?: number }).code;
          if (status === 401 || status === 403) finish(SSE_AUTH_FAILED, `HTTP ${status}`);
          else finish(ABNORMAL_CLOSURE, 'stream error');
        }
        return;
      }
      let data: unknown;
      try {
        data = JSON.parse(raw);
      } catch {
        return;
      }
      const message = { type, data } as ServerMessage;
      if (message.type === 'connection_established') {
        connectionId = message.data.connectionId;
        options.handlers.established(message.data);
      }
      options.handlers.message(message);
    });
  }

  const call = async (
    method: 'POST' | 'DELETE',
    path: string,
    body?: object,
  ): Promise<Response> => {
    if (closed || !connectionId) throw new TransportClosedError();
    const token = await options.getToken();
    let response: Response;
    try {
      response = await options.fetchImpl(`${base}/${encodeURIComponent(connectionId)}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body ? { 'content-type': 'application/json' } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch {
      throw new TransportClosedError();
    }
    if (response.ok) return response;
    // The connection is gone on the server (404): the stream will end too; retry then.
    if (response.status === 404) throw new TransportClosedError();
    throw new RealtimeRequestError(await readErrorInfo(response));
  };

  return {
    kind: 'sse',
    async subscribe(req: SubscribeRequest): Promise<SubscribeReply> {
      const body: Record<string, unknown> = { query: req.query };
      if (req.resumeFrom != null) body.resumeFrom = req.resumeFrom;
      const response = await call('POST', '/subscriptions', body);
      return (await response.json()) as SubscribeReply;
    },
    async unsubscribe(subscriptionId: string): Promise<void> {
      await call('DELETE', `/subscriptions/${encodeURIComponent(subscriptionId)}`);
    },
    close(code = 1000, reason = 'client closed'): void {
      finish(code, reason);
    },
  };
}
