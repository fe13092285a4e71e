import { Body, Controller, Delete, Get, HttpCode, Param, Post, Req, Res } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { AbilityService } from '../auth/ability.service';
import { TokenError, TokenService } from '../auth/token.service';
import { AuditService } from '../audit/audit.service';
import {
  HttpRequest,
  HttpResponse,
  pathOf,
  rawRequest,
  rawResponse,
  takeOver,
} from '../common/http-objects';
import {
  ForbiddenError,
  NotFoundError,
  RealtimeError,
  RealtimeHttpException,
  UnauthorizedError,
} from '../common/realtime.errors';
import type { Principal, Query } from '../realtime.types';
import { SubscriptionsService } from '../subscriptions/subscriptions.service';
import { ConnectionRegistry } from './connection-registry';
import { remoteOf } from './realtime-ws.adapter';
import { SseConnection } from './sse-connection';

const STATUS: Record<string, number> = {
  invalid_query: 400,
  forbidden: 403,
  not_found: 404,
  limit_exceeded: 429,
  rate_limited: 429,
};

function toHttp(e: unknown): never {
  if (e instanceof RealtimeError) {
    throw new RealtimeHttpException(STATUS[e.code] ?? 500, e.code, e.message, e.details);
  }
  throw e;
}

/**
 * Server-Sent Events (PROTOCOL.md): `GET /realtime/sse?subscribe=<query JSON>` opens a
 * stream; its subscriptions can be changed over REST while it is open. A stream lives on
 * the node that accepted it: subscription requests for it must reach that node (another
 * node answers 404).
 */
@ApiTags('realtime')
@Controller('realtime/sse')
export class SseController {
  constructor(
    private readonly tokens: TokenService,
    private readonly abilities: AbilityService,
    private readonly registry: ConnectionRegistry,
    private readonly subscriptions: SubscriptionsService,
    private readonly audit: AuditService,
  ) {}

  private authenticate(req: HttpRequest): Principal {
    try {
      return this.tokens.verify(this.tokens.extract(req));
    } catch (e) {
      const remote = remoteOf(rawRequest(req));
      this.audit.record({
        action: 'auth_failed',
        outcome: 'failure',
        details: { transport: 'sse', path: pathOf(req), reason: (e as Error).message },
        ipAddress: remote.ip,
        userAgent: remote.userAgent,
      });
      throw new UnauthorizedError(e instanceof TokenError ? e.message : 'authentication failed');
    }
  }

  @Get()
  @ApiOperation({
    summary: 'Open an event stream; ?subscribe=<query JSON> may repeat; Last-Event-ID resumes',
  })
  async stream(@Req() req: HttpRequest, @Res() reply: HttpResponse): Promise<void> {
    const remote = remoteOf(rawRequest(req));
    // the stream is written to the Node response (Express's is one; Fastify's reply has it)
    const res = rawResponse(reply);
    if (!(await this.registry.allowAttempt(remote, 'sse'))) {
      res.setHeader('Retry-After', '60');
      throw new RealtimeHttpException(429, 'rate_limited', 'too many connection attempts');
    }
    let principal: Principal;
    try {
      principal = this.authenticate(req);
    } catch (e) {
      // as on the WebSocket: a refused stream is a failed connection as well
      this.audit.record({
        action: 'connection_failed',
        outcome: 'failure',
        details: { transport: 'sse', reason: (e as Error).message },
        ipAddress: remote.ip,
        userAgent: remote.userAgent,
      });
      throw e;
    }
    const raw = (req.query as Record<string, unknown> | undefined)?.subscribe;
    const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
    const queries: Query[] = [];
    try {
      list.forEach((item, i) => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(String(item));
        } catch {
          throw new RealtimeError('invalid_query', 'invalid subscribe parameter', [
            { path: `subscribe.${i}`, message: 'must be a URL-encoded JSON query' },
          ]);
        }
        queries.push(this.subscriptions.validate(parsed));
      });
    } catch (e) {
      toHttp(e);
    }
    const lastEventId =
      req.headers['last-event-id'] ??
      (req.query as Record<string, unknown> | undefined)?.lastEventId;
    const resumeFrom =
      typeof lastEventId === 'string' && lastEventId !== '' ? lastEventId : undefined;
    const { maxBufferedBytes } = this.registry.limits;
    const connection = new SseConnection(
      res,
      principal,
      this.abilities.forPrincipal(principal),
      remote,
      (c) => this.registry.drop(c, 4009, 'slow consumer', 'slow_consumer'),
      maxBufferedBytes,
    );
    connection.safeId = () => this.subscriptions.safeResumePoint(connection);
    // the head goes out with connection_established, the first event admit() writes
    res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
    res.setHeader('Cache-Control', 'no-cache, no-transform');
    res.setHeader('Connection', 'keep-alive');
    res.setHeader('X-Accel-Buffering', 'no');
    rawRequest(req).socket.setNoDelay(true);
    try {
      this.registry.admit(connection);
    } catch (e) {
      connection.open = false;
      // no stream opened: the refusal is a JSON answer, not an event stream
      for (const name of ['Content-Type', 'Cache-Control', 'Connection', 'X-Accel-Buffering']) {
        res.removeHeader(name);
      }
      toHttp(e);
    }
    // from here on the handler owns the response (Fastify would answer when it returns)
    takeOver(reply);
    res.on('close', () => this.registry.release(connection));
    for (const query of queries) {
      if (!connection.open) break; // the client went away while earlier ones started
      await this.subscriptions
        .subscribe(connection, query, { resumeFrom })
        .catch((e: RealtimeError) =>
          connection.emitRaw(
            'error',
            JSON.stringify({ code: e.code ?? 'internal', message: e.message }),
          ),
        );
    }
  }

  private owned(req: HttpRequest, connectionId: string): SseConnection {
    const principal = this.authenticate(req);
    const connection = this.registry.get(connectionId);
    if (!connection || connection.transport !== 'sse') {
      throw new NotFoundError('no such SSE connection on this node');
    }
    if (connection.principal.userId !== principal.userId) {
      throw new ForbiddenError('the connection belongs to another user');
    }
    return connection as SseConnection;
  }

  @Post(':connectionId/subscriptions')
  @ApiOperation({ summary: 'Add a subscription to an open stream: {query, resumeFrom?}' })
  async add(
    @Req() req: HttpRequest,
    @Param('connectionId') connectionId: string,
    @Body() body: unknown,
  ) {
    const connection = this.owned(req, connectionId);
    const { query, resumeFrom, ...rest } = (body && typeof body === 'object' ? body : {}) as Record<
      string,
      unknown
    >;
    const unknown = Object.keys(rest);
    if (query === undefined || unknown.length) {
      toHttp(
        new RealtimeError('invalid_query', 'invalid subscription request', [
          ...(query === undefined ? [{ path: 'query', message: 'required' }] : []),
          ...unknown.map((k) => ({ path: k, message: 'unknown field' })),
        ]),
      );
    }
    const sub = await this.subscriptions.subscribe(connection, query, { resumeFrom }).catch(toHttp);
    return { subscriptionId: sub.id, query: sub.query };
  }

  @Delete(':connectionId/subscriptions/:subscriptionId')
  @HttpCode(204)
  remove(
    @Req() req: HttpRequest,
    @Param('connectionId') connectionId: string,
    @Param('subscriptionId') subscriptionId: string,
  ): void {
    const connection = this.owned(req, connectionId);
    try {
      this.subscriptions.unsubscribe(connection, subscriptionId);
    } catch (e) {
      toHttp(e);
    }
  }
}
