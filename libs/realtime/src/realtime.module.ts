import { Inject, MiddlewareConsumer, Module, NestModule } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { DataSourceOptions, EntitySchema } from 'typeorm';
import { AbilityService } from './auth/ability.service';
import { AuthGuard } from './auth/auth.guard';
import { RequestContext } from './auth/request-context';
import { TokenService } from './auth/token.service';
import { AuditController } from './audit/audit.controller';
import { AuditLog, auditLogSchema } from './audit/audit-log.entity';
import { AuditService } from './audit/audit.service';
import { keyTypeOf, type KeyType } from './common/key-column';
import { ConnectionRegistry } from './connections/connection-registry';
import { RealtimeGateway } from './connections/realtime.gateway';
import { SseController } from './connections/sse.controller';
import { MetricsController } from './metrics/metrics.controller';
import { MetricsService } from './metrics/metrics.service';
import { ChangeCaptureSubscriber } from './notifications/change-capture.subscriber';
import { ChangeFeedService } from './notifications/change-feed.service';
import { ChangeLogEntry, changeLogSchema } from './notifications/change-log.entity';
import { ChangeLogService } from './notifications/change-log.service';
import { CollectionRegistry } from './notifications/collection-registry';
import { EntityWriter } from './notifications/entity-writer';
import { InProcessChangeBus } from './notifications/in-process-change-bus';
import { RedisChangeBus } from './notifications/redis-change-bus';
import { SqliteCheckpointer } from './notifications/sqlite-checkpointer';
import { TransactionRunner } from './notifications/transaction-runner';
import { CHANGE_BUS, REALTIME_ABILITY_FACTORY } from './realtime.constants';
import { REALTIME_OPTIONS, RealtimeConfigurableModule } from './realtime.module-definition';
import type { RealtimeModuleOptions } from './realtime.options';
import { SubscriptionsService } from './subscriptions/subscriptions.service';

const SCHEMAS: Record<KeyType, EntitySchema[]> = {
  integer: [auditLogSchema('integer'), changeLogSchema('integer')],
  bigint: [auditLogSchema('bigint'), changeLogSchema('bigint')],
};

/**
 * The entities the library stores (the audit log and the change log), for a DataSource of
 * this type; add them to it: `entities: [Note, ...realtimeEntities('postgres')]`. On
 * PostgreSQL their keys are `bigint`; elsewhere `integer` (64 bits on SQLite).
 *
 * A PostgreSQL database made with `REALTIME_ENTITIES` must have its keys widened first
 * (README, "Upgrading"): under `synchronize: true` TypeORM would otherwise drop and re-add
 * them while the DataSource starts, before the library can warn of anything.
 */
export function realtimeEntities(type: DataSourceOptions['type']): EntitySchema[] {
  return SCHEMAS[keyTypeOf(type)];
}

/**
 * The entities with `integer` keys on every driver: right for SQLite, and on PostgreSQL the
 * schema of versions before `realtimeEntities` (32-bit keys). Kept so that such a database
 * is not altered behind its owner's back; README, "Upgrading", says how to widen it.
 */
export const REALTIME_ENTITIES = SCHEMAS.integer;

/**
 * Real-time subscriptions for the application's TypeORM entities.
 *
 * @example
 * RealtimeModule.forRoot({
 *   auth: { secret: process.env.JWT_SECRET },
 *   collections: [{ name: 'tasks', entity: Task }],
 *   abilityFactory: defineAppAbility,
 * })
 */
@Module({
  // repositories by class: whichever width the DataSource registered
  imports: [TypeOrmModule.forFeature([AuditLog, ChangeLogEntry])],
  controllers: [AuditController, MetricsController, SseController],
  providers: [
    {
      provide: REALTIME_ABILITY_FACTORY,
      useFactory: (options: RealtimeModuleOptions) => options.abilityFactory,
      inject: [REALTIME_OPTIONS],
    },
    {
      provide: CHANGE_BUS,
      useFactory: (options: RealtimeModuleOptions) =>
        options.redisUrl ? new RedisChangeBus(options.redisUrl) : new InProcessChangeBus(),
      inject: [REALTIME_OPTIONS],
    },
    TokenService,
    AbilityService,
    AuthGuard,
    AuditService,
    MetricsService,
    TransactionRunner,
    CollectionRegistry,
    ChangeLogService,
    ChangeCaptureSubscriber,
    EntityWriter,
    ChangeFeedService,
    SqliteCheckpointer,
    SubscriptionsService,
    ConnectionRegistry,
    RealtimeGateway,
  ],
  exports: [
    REALTIME_OPTIONS,
    CHANGE_BUS,
    TokenService,
    AbilityService,
    AuthGuard,
    AuditService,
    MetricsService,
    TransactionRunner,
    EntityWriter,
    CollectionRegistry,
    ChangeLogService,
    ChangeFeedService,
    SubscriptionsService,
    ConnectionRegistry,
  ],
})
export class RealtimeModule extends RealtimeConfigurableModule implements NestModule {
  constructor(@Inject(REALTIME_OPTIONS) private readonly options: RealtimeModuleOptions) {
    super();
  }

  configure(consumer: MiddlewareConsumer): void {
    if (!this.options.requestContext) return;
    // every request runs in its own context, where the auth guard records the actor
    consumer
      .apply((_req: unknown, _res: unknown, next: () => void) => RequestContext.run(next))
      .forRoutes('*');
  }
}
