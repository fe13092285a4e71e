import { Logger } from '@nestjs/common';
import { OnGatewayConnection, OnGatewayDisconnect, WebSocketGateway } from '@nestjs/websockets';
import type { IncomingMessage } from 'node:http';
import type { RawData, WebSocket } from 'ws';
import { AbilityService } from '../auth/ability.service';
import { TokenError, TokenService } from '../auth/token.service';
import { AuditService } from '../audit/audit.service';
import { RealtimeError } from '../common/realtime.errors';
import { InjectRealtimeOptions } from '../realtime.module-definition';
import type { RealtimeModuleOptions } from '../realtime.options';
import type { ErrorCode, ErrorDetail, ServerEventMap } from '../realtime.types';
import { emit } from '../subscriptions/subscription-sink';
import { SubscriptionsService } from '../subscriptions/subscriptions.service';
import { ConnectionRegistry } from './connection-registry';
import { remoteOf } from './realtime-ws.adapter';
import { WsConnection, wsConnectionOf, WsConnectionOwner } from './ws-connection';
import { flushFrameWrites, nativeFrameWriterLoaded, nativeFrameWriterStatus } from './ws-frame';

const SUBSCRIBE_KEYS = new Set(['query', 'tabId', 'resumeFrom']);

/** The `id` of a request frame, when it is a JSON object with a string id. */
function requestIdOf(raw: RawData): string | undefined {
  try {
    const message: unknown = JSON.parse(raw.toString());
    const id = (message as { id?: unknown } | null)?.id;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The WebSocket endpoint of PROTOCOL.md (`/realtime/ws`, on the app's HTTP port through
 * RealtimeWsAdapter): handshake authentication, then one JSON message per frame.
 */
@WebSocketGateway({ path: '/realtime/ws' })
export class RealtimeGateway
  implements OnGatewayConnection, OnGatewayDisconnect, WsConnectionOwner
{
  private readonly logger = new Logger(RealtimeGateway.name);
  /** fan-out frames go through the native frame writer */
  readonly nativeWrites: boolean;

  constructor(
    private readonly tokens: TokenService,
    private readonly abilities: AbilityService,
    private readonly registry: ConnectionRegistry,
    private readonly subscriptions: SubscriptionsService,
    private readonly audit: AuditService,
    @InjectRealtimeOptions() options: RealtimeModuleOptions,
  ) {
    // a dispatch's frames leave when it ends, not at the end of the tick: on a quiet feed
    // that is before the writer's HTTP response (ChangeFeedService.emit)
    subscriptions.onDispatched(flushFrameWrites);
    const wanted = options.nativeWrites ?? true;
    this.nativeWrites = wanted && nativeFrameWriterLoaded;
    if (wanted && !nativeFrameWriterLoaded) {
      this.logger.warn(
        `native frame writer not built or not loaded (${nativeFrameWriterStatus}): fan-out writes use fs.writeSync`,
      );
    }
  }

  handleConnection(socket: WebSocket, req: IncomingMessage): void {
    const remote = remoteOf(req);
    let principal;
    try {
      principal = this.tokens.verify(this.tokens.extract(req));
    } catch (e) {
      const reason =
        e instanceof TokenError && e.reason === 'required'
          ? 'authentication required'
          : 'authentication failed';
      this.audit.record({
        action: 'auth_failed',
        outcome: 'failure',
        details: { transport: 'websocket', reason: (e as Error).message },
        ipAddress: remote.ip,
        userAgent: remote.userAgent,
      });
      this.audit.record({
        action: 'connection_failed',
        outcome: 'failure',
        details: { transport: 'websocket', reason },
        ipAddress: remote.ip,
        userAgent: remote.userAgent,
      });
      socket.close(1008, reason);
      return;
    }
    const limits = this.registry.limits;
    const connection = new WsConnection(
      socket,
      principal,
      this.abilities.forPrincipal(principal),
      remote,
      limits.messageBurst,
      this,
      limits.maxBufferedBytes,
      this.nativeWrites,
    );
    try {
      this.registry.admit(connection);
    } catch (e) {
      const err = e as RealtimeError;
      this.send(connection, err.code, err.message);
      connection.close(4008, 'too many connections for this user');
      return;
    }
    connection.listen();
  }

  private send(
    connection: WsConnection,
    code: ErrorCode,
    message: string,
    id?: string,
    details?: ErrorDetail[],
  ): void {
    const data: ServerEventMap['error'] = details ? { code, message, details } : { code, message };
    emit(connection, 'error', data, { requestId: id });
  }

  /** Token bucket per connection; a client that keeps pushing past it is closed 4008. */
  private admitMessage(connection: WsConnection, raw: RawData, isBinary: boolean): boolean {
    const limits = this.registry.limits;
    const now = Date.now();
    connection.tokens = Math.min(
      limits.messageBurst,
      connection.tokens + ((now - connection.lastRefill) * limits.messagesPerSecond) / 1000,
    );
    connection.lastRefill = now;
    if (connection.tokens >= 1) {
      connection.tokens -= 1;
      connection.strikes = 0;
      return true;
    }
    connection.strikes++;
    if (connection.strikes === 1 || connection.strikes >= limits.rateLimitStrikes) {
      this.audit.record({
        action: 'rate_limited',
        outcome: 'failure',
        userId: connection.principal.userId,
        connectionId: connection.id,
        details: {
          strikes: connection.strikes,
          closed: connection.strikes >= limits.rateLimitStrikes,
        },
      });
    }
    // the refusal answers the request: it echoes its id, or a client would wait forever
    const id = isBinary ? undefined : requestIdOf(raw);
    if (connection.strikes >= limits.rateLimitStrikes) {
      this.send(connection, 'rate_limited', 'too many messages; closing', id);
      this.registry.drop(connection, 4008, 'rate limit abused', 'rate_limited');
      return false;
    }
    this.send(
      connection,
      'rate_limited',
      `at most ${limits.messagesPerSecond} messages per second`,
      id,
    );
    return false;
  }

  /** Nest's disconnect hook: the client socket emitted 'close'. */
  handleDisconnect(socket: WebSocket): void {
    const connection = wsConnectionOf(socket);
    if (connection) this.onClose(connection);
  }

  onClose(connection: WsConnection): void {
    this.registry.release(connection);
  }

  onOverflow(connection: WsConnection): void {
    this.registry.drop(connection, 4009, 'slow consumer', 'slow_consumer');
  }

  onMessage(connection: WsConnection, raw: RawData, isBinary: boolean): void {
    if (!connection.open || !this.admitMessage(connection, raw, isBinary)) return;
    if (isBinary)
      return this.send(connection, 'invalid_message', 'binary frames are not supported');
    let message: unknown;
    try {
      message = JSON.parse(raw.toString());
    } catch {
      return this.send(connection, 'invalid_message', 'the message is not JSON');
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      return this.send(connection, 'invalid_message', 'the message must be a JSON object');
    }
    const { type, id, data } = message as { type?: unknown; id?: unknown; data?: unknown };
    if (id !== undefined && typeof id !== 'string') {
      return this.send(connection, 'invalid_message', '`id` must be a string');
    }
    if (typeof type !== 'string')
      return this.send(connection, 'invalid_message', 'missing `type`', id);
    if (data !== undefined && (typeof data !== 'object' || data === null || Array.isArray(data))) {
      return this.send(connection, 'invalid_message', '`data` must be an object', id);
    }
    const body = (data ?? {}) as Record<string, unknown>;
    try {
      switch (type) {
        case 'subscribe':
          return this.subscribe(connection, body, id);
        case 'unsubscribe':
          return this.subscriptions.unsubscribe(connection, body.subscriptionId, id);
        case 'ping':
          return emit(
            connection,
            'pong',
            { ts: body.ts ?? null, serverTime: new Date().toISOString() },
            { requestId: id },
          );
        case 'get_subscriptions':
          return emit(
            connection,
            'subscriptions',
            {
              subscriptions: this.subscriptions.subscriptionsOf(connection).map((s) => ({
                subscriptionId: s.id,
                query: s.query,
                createdAt: new Date(s.createdAt).toISOString(),
              })),
            },
            { requestId: id },
          );
        case 'auth':
          return this.reauthenticate(connection, body.token, id);
        default:
          return this.send(
            connection,
            'unknown_type',
            `unknown message type '${type.slice(0, 64)}'`,
            id,
          );
      }
    } catch (e) {
      this.fail(connection, e, id);
    }
  }

  private fail(connection: WsConnection, e: unknown, id?: string): void {
    if (e instanceof RealtimeError) return this.send(connection, e.code, e.message, id, e.details);
    this.logger.error(`message handling failed: ${(e as Error).stack}`);
    this.send(connection, 'internal', 'internal error', id);
  }

  private subscribe(connection: WsConnection, body: Record<string, unknown>, id?: string): void {
    const unknown = Object.keys(body).filter((k) => !SUBSCRIBE_KEYS.has(k));
    if (unknown.length || body.query === undefined) {
      const details = unknown.map((k) => ({ path: k, message: 'unknown field' }));
      if (body.query === undefined) details.push({ path: 'query', message: 'required' });
      return this.send(connection, 'invalid_query', 'invalid subscribe request', id, details);
    }
    this.subscriptions
      .subscribe(connection, body.query, { resumeFrom: body.resumeFrom, requestId: id })
      .catch((e) => this.fail(connection, e, id));
  }

  private reauthenticate(connection: WsConnection, token: unknown, id?: string): void {
    let principal;
    try {
      principal = this.tokens.verify(typeof token === 'string' ? token : undefined);
    } catch (e) {
      this.audit.record({
        action: 'auth_failed',
        outcome: 'failure',
        userId: connection.principal.userId,
        connectionId: connection.id,
        details: { transport: 'websocket', reason: (e as Error).message, refresh: true },
      });
      return this.send(
        connection,
        'forbidden',
        `token refresh refused: ${(e as Error).message}`,
        id,
      );
    }
    if (principal.userId !== connection.principal.userId) {
      this.audit.record({
        action: 'auth_failed',
        outcome: 'failure',
        userId: connection.principal.userId,
        connectionId: connection.id,
        details: { transport: 'websocket', reason: 'token of another user', refresh: true },
      });
      this.send(connection, 'forbidden', 'the new token is for another user', id);
      this.registry.drop(connection, 1008, 'token of another user', 'auth');
      return;
    }
    emit(
      connection,
      'auth_ok',
      { expiresAt: new Date(principal.exp * 1000).toISOString() },
      { requestId: id },
    );
    this.registry.refresh(connection, principal);
  }
}
