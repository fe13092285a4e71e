import {
  BeforeApplicationShutdown,
  Injectable,
  Logger,
  OnModuleDestroy,
  OnModuleInit,
} from '@nestjs/common';
import { ThrottlerStorageService } from '@nestjs/throttler';
import { AbilityService } from '../auth/ability.service';
import { AuditService } from '../audit/audit.service';
import { RealtimeError } from '../common/realtime.errors';
import { MetricsService } from '../metrics/metrics.service';
import { InjectRealtimeOptions } from '../realtime.module-definition';
import { DEFAULT_LIMITS, RealtimeLimits, RealtimeModuleOptions } from '../realtime.options';
import type { Principal } from '../realtime.types';
import { emit } from '../subscriptions/subscription-sink';
import { SubscriptionsService } from '../subscriptions/subscriptions.service';
import type { Connection } from './connection';
import { HeartbeatWheel } from './heartbeat-wheel';

/** Longest expiry timer: past it the sweep just arms again (one wake-up a minute at most). */
const MAX_EXPIRY_DELAY_MS = 60_000;

/**
 * Every connection of this node, by id and by user: admission (connections per user and
 * attempts per IP), token expiry, heartbeats, back-pressure drops, and the orderly end of
 * everything at shutdown. Releasing a connection removes every subscription and timer.
 */
@Injectable()
export class ConnectionRegistry
  implements OnModuleInit, OnModuleDestroy, BeforeApplicationShutdown
{
  private readonly logger = new Logger(ConnectionRegistry.name);
  private readonly connections = new Map<string, Connection>();
  private readonly byUser = new Map<string, Set<Connection>>();
  private readonly attempts = new ThrottlerStorageService();
  /** every connection's heartbeat, spread over the interval (see HeartbeatWheel) */
  private readonly heartbeats: HeartbeatWheel<Connection>;
  /**
   * Token expiries, bucketed by the second: one timer for all connections instead of one
   * each (a timer per connection costs memory and, with distinct delays, a timer list
   * each). The timer is armed for the earliest bucket only, so a server whose tokens
   * expire in hours is not woken several times a second to look.
   */
  private readonly expiries = new Map<number, Set<Connection>>();
  private expiryTimer?: NodeJS.Timeout;
  /** the second the expiry timer is armed for (Infinity: not armed) */
  private expiryDue = Infinity;
  /** shutting down: no expiry timer is armed again */
  private destroyed = false;
  readonly limits: RealtimeLimits;
  readonly heartbeatIntervalMs: number;

  constructor(
    @InjectRealtimeOptions() options: RealtimeModuleOptions,
    private readonly subscriptions: SubscriptionsService,
    private readonly abilities: AbilityService,
    private readonly audit: AuditService,
    private readonly metrics: MetricsService,
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? 30_000;
    this.heartbeats = new HeartbeatWheel(this.heartbeatIntervalMs, (c) => this.beat(c));
  }

  onModuleInit(): void {
    this.heartbeats.start();
  }

  onModuleDestroy(): void {
    this.destroyed = true;
    this.heartbeats.stop();
    clearTimeout(this.expiryTimer);
    this.expiryDue = Infinity;
    this.attempts.onApplicationShutdown();
  }

  get size(): number {
    return this.connections.size;
  }

  get(id: string): Connection | undefined {
    return this.connections.get(id);
  }

  /**
   * Counts a connection attempt of an IP; false past the per-minute limit. An IP's first
   * refusal in a minute is audited (`rate_limited`), its others in that minute are not:
   * a flood of attempts must not become a flood of audit rows.
   */
  async allowAttempt(
    remote: { ip: string | null; userAgent: string | null },
    transport: Connection['transport'],
  ): Promise<boolean> {
    const limit = this.limits.connectionsPerIpPerMinute;
    const ip = remote.ip ?? 'unknown';
    const record = await this.attempts.increment(`connect:${ip}`, 60_000, limit, 60_000, 'connect');
    if (!record.isBlocked && record.totalHits <= limit) return true;
    // a block of 60 s after the first: the one way @nestjs/throttler 6.x blocks in every
    // minor (a block of 0 takes a path of its own only since 6.7)
    const refusals = await this.attempts.increment(`refused:${ip}`, 60_000, 1, 60_000, 'refused');
    if (!refusals.isBlocked) {
      this.audit.record({
        action: 'rate_limited',
        outcome: 'failure',
        details: { transport, reason: 'too many connection attempts', limit },
        ipAddress: remote.ip,
        userAgent: remote.userAgent,
      });
    }
    return false;
  }

  /** Registers a connection; throws limit_exceeded past the per-user limit. */
  admit(connection: Connection): void {
    const userId = connection.principal.userId;
    let mine = this.byUser.get(userId);
    if (mine && mine.size >= this.limits.maxConnectionsPerUser) {
      this.audit.record({
        action: 'connection_failed',
        outcome: 'failure',
        userId,
        details: { transport: connection.transport, reason: 'too many connections for this user' },
        ipAddress: connection.remote.ip,
        userAgent: connection.remote.userAgent,
      });
      throw new RealtimeError(
        'limit_exceeded',
        `at most ${this.limits.maxConnectionsPerUser} connections per user`,
      );
    }
    if (!mine) {
      mine = new Set();
      this.byUser.set(userId, mine);
    }
    mine.add(connection);
    this.connections.set(connection.id, connection);
    this.heartbeats.add(connection);
    this.metrics.connections.inc({ transport: connection.transport });
    this.scheduleExpiry(connection);
    this.audit.record({
      action: 'connection_established',
      userId,
      connectionId: connection.id,
      details: { transport: connection.transport },
      ipAddress: connection.remote.ip,
      userAgent: connection.remote.userAgent,
    });
    emit(connection, 'connection_established', {
      connectionId: connection.id,
      userId,
      serverTime: new Date().toISOString(),
      heartbeatIntervalMs: this.heartbeatIntervalMs,
      protocolVersion: 1,
    });
  }

  /** Forgets a closed connection: its subscriptions, timers and counts. Idempotent. */
  release(connection: Connection, reason = 'closed'): void {
    connection.open = false;
    this.unscheduleExpiry(connection);
    if (!this.connections.delete(connection.id)) return;
    this.heartbeats.remove(connection);
    const mine = this.byUser.get(connection.principal.userId);
    mine?.delete(connection);
    if (mine && mine.size === 0) this.byUser.delete(connection.principal.userId);
    this.subscriptions.removeSink(connection);
    this.metrics.connections.dec({ transport: connection.transport });
    this.audit.record({
      action: 'connection_closed',
      userId: connection.principal.userId,
      connectionId: connection.id,
      details: { transport: connection.transport, reason },
      ipAddress: connection.remote.ip,
      userAgent: connection.remote.userAgent,
    });
  }

  /** Closes a connection for cause and counts it in realtime_dropped_connections_total. */
  drop(connection: Connection, code: number, reason: string, metricReason: string): void {
    if (!connection.open) return;
    this.metrics.dropped.inc({ reason: metricReason });
    if (metricReason === 'heartbeat_timeout') connection.terminate();
    else connection.close(code, reason);
    this.release(connection, metricReason);
  }

  /** A refreshed token: same user only; the ability is rebuilt and rights re-checked. */
  refresh(connection: Connection, principal: Principal): void {
    connection.principal = principal;
    connection.ability = this.abilities.forPrincipal(principal);
    this.scheduleExpiry(connection);
    this.subscriptions.reauthorize(connection);
  }

  private scheduleExpiry(connection: Connection): void {
    this.unscheduleExpiry(connection);
    const second = connection.principal.exp;
    let bucket = this.expiries.get(second);
    if (!bucket) {
      bucket = new Set();
      this.expiries.set(second, bucket);
    }
    bucket.add(connection);
    connection.expiresAtSecond = second;
    if (second < this.expiryDue) this.armExpiry(second);
  }

  /**
   * Sweeps at the start of the second after `exp` ends (a whole `exp`: at `exp`), or within
   * MAX_EXPIRY_DELAY_MS to look again: `exp` is wall-clock time, timers are not, and a
   * clock step or a suspended VM must not keep an expired token connected for long.
   */
  private armExpiry(second: number): void {
    if (this.destroyed) return;
    clearTimeout(this.expiryTimer);
    this.expiryDue = second;
    const due = Math.ceil(second) * 1000;
    const delay = Math.min(Math.max(due - Date.now(), 0), MAX_EXPIRY_DELAY_MS);
    this.expiryTimer = setTimeout(() => this.sweepExpiries(), delay);
    this.expiryTimer.unref();
  }

  private unscheduleExpiry(connection: Connection): void {
    if (connection.expiresAtSecond === undefined) return;
    const bucket = this.expiries.get(connection.expiresAtSecond);
    bucket?.delete(connection);
    if (bucket && bucket.size === 0) this.expiries.delete(connection.expiresAtSecond);
    connection.expiresAtSecond = undefined;
  }

  /** Ends the connections whose token expired (`exp` is in seconds), and arms for the next. */
  private sweepExpiries(): void {
    this.expiryTimer = undefined;
    this.expiryDue = Infinity;
    // a token is valid through its `exp` second's start: expire once `floor(now) >= exp`,
    // jsonwebtoken's rule (TokenService's too)
    const now = Math.floor(Date.now() / 1000);
    let next = Infinity;
    for (const [second, bucket] of this.expiries) {
      if (second > now) {
        if (second < next) next = second;
        continue;
      }
      this.expiries.delete(second);
      for (const connection of bucket) {
        connection.expiresAtSecond = undefined;
        this.expire(connection);
      }
    }
    if (next !== Infinity) this.armExpiry(next);
  }

  private expire(connection: Connection): void {
    if (!connection.open) return;
    emit(connection, 'error', { code: 'token_expired', message: 'the access token expired' });
    this.drop(connection, 4001, 'token expired', 'token_expired');
  }

  private beat(connection: Connection): void {
    if (connection.transport === 'websocket') {
      if (connection.missedPongs >= 2) {
        this.drop(connection, 1006, 'heartbeat timeout', 'heartbeat_timeout');
        return;
      }
      connection.missedPongs++;
    }
    try {
      connection.heartbeat();
    } catch (e) {
      this.logger.warn(`heartbeat to ${connection.id} failed: ${(e as Error).message}`);
    }
  }

  /** Graceful shutdown: subscription_ended server_shutdown, close 1001, audit flushed. */
  async beforeApplicationShutdown(): Promise<void> {
    this.heartbeats.stop();
    const closing: Promise<void>[] = [];
    for (const connection of [...this.connections.values()]) {
      this.subscriptions.endAll(connection, 'server_shutdown');
      closing.push(connection.closed());
      connection.close(1001, 'server shutting down');
      this.release(connection, 'server_shutdown');
    }
    await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 2000).unref())]);
    await this.audit.flush();
  }
}
