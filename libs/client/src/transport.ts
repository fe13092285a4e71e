import type {
  NormalizedQuery,
  Query,
  RealtimeErrorInfo,
  Seq,
  ServerEventMap,
  ServerMessage,
  TransportKind,
} from './types';

export interface SubscribeRequest {
  query: NormalizedQuery;
  resumeFrom?: Seq;
  tabId?: string;
}

export interface SubscribeReply {
  subscriptionId: string;
  query: Query;
}

/** A request the server answered with an error (`invalid_query`, `forbidden`, …). */
export class RealtimeRequestError extends Error {
  constructor(readonly info: RealtimeErrorInfo) {
    super(info.message);
    this.name = 'RealtimeRequestError';
  }
}

/** The transport went away before the server answered; the request is retried on reconnect. */
export class TransportClosedError extends Error {
  constructor() {
    super('the connection closed before the server answered');
    this.name = 'TransportClosedError';
  }
}

export interface CloseInfo {
  code: number;
  reason: string;
  /** whether `connection_established` had arrived */
  established: boolean;
}

export interface TransportHandlers {
  established(info: ServerEventMap['connection_established']): void;
  message(message: ServerMessage): void;
  /** called exactly once per session, also when the client closed it */
  closed(info: CloseInfo): void;
}

/** One physical connection: a WebSocket or an SSE stream, from open to close. */
export interface TransportSession {
  readonly kind: TransportKind;
  subscribe(request: SubscribeRequest): Promise<SubscribeReply>;
  unsubscribe(subscriptionId: string): Promise<void>;
  /** In-band token refresh; absent where the protocol has none (SSE reconnects instead). */
  reauthenticate?(token: string): Promise<void>;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocket;
export type EventSourceConstructor = new (url: string) => EventSource;
export type FetchFunction = typeof fetch;

export interface TransportOptions {
  /** http(s) origin plus any base path, no trailing slash */
  baseUrl: string;
  realtimePath: string;
  token: string;
  /** for SSE's REST calls, which may outlive the token the stream opened with */
  getToken: () => Promise<string>;
  fetchImpl: FetchFunction;
  handlers: TransportHandlers;
}

/** Close code used for sessions the client gave up on without a close frame (dead peer). */
export const ABNORMAL_CLOSURE = 1006;

export function toWebSocketUrl(baseUrl: string): string {
  return baseUrl.replace(/^http(s?):/i, 'ws$1:');
}
