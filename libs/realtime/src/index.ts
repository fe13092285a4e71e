export * from './realtime.types';
export * from './realtime.options';
export * from './realtime.constants';
export { RealtimeModule, REALTIME_ENTITIES, realtimeEntities } from './realtime.module';
export { InjectRealtimeOptions, REALTIME_OPTIONS } from './realtime.module-definition';
export { TokenService, TokenError } from './auth/token.service';
export { AbilityService, canOnDoc, readableFields, pickFields } from './auth/ability.service';
export {
  Authenticated,
  CurrentAbility,
  CurrentPrincipal,
  type AuthenticatedOptions,
} from './auth/authenticated.decorator';
export { AuthGuard } from './auth/auth.guard';
export { RequestContext } from './auth/request-context';
export { AuditService, type AuditEntry } from './audit/audit.service';
export { AuditLog, auditLogSchema } from './audit/audit-log.entity';
export * from './common/realtime.errors';
export { HttpErrorFilter, httpErrorBody } from './common/http-exception.filter';
export { zodDetails } from './common/zod-details';
export { MetricsService } from './metrics/metrics.service';
export type { ChangeBus } from './notifications/change-bus';
export { InProcessChangeBus } from './notifications/in-process-change-bus';
export { ChangeCaptureBypassError } from './notifications/change-capture.subscriber';
export { ChangeLogEntry, changeLogSchema } from './notifications/change-log.entity';
export { keyTypeOf, type KeyType } from './common/key-column';
export { ChangeLogService } from './notifications/change-log.service';
export { ChangeFeedService } from './notifications/change-feed.service';
export { CollectionRegistry } from './notifications/collection-registry';
export { SqliteCheckpointer } from './notifications/sqlite-checkpointer';
export { lowerStartupThreads, threadNice } from './common/thread-priority';
export type { CheckpointReport } from './notifications/sqlite-checkpointer';
export { TransactionRunner } from './notifications/transaction-runner';
export { EntityWriter, StaleEntityError } from './notifications/entity-writer';
export type { TransactionOptions } from './notifications/transaction-runner';
export { SubscriptionsService } from './subscriptions/subscriptions.service';
export type { SubscriptionSink } from './subscriptions/subscription-sink';
export type { CustomFilterFn } from './subscriptions/filter-compiler';
export { ConnectionRegistry } from './connections/connection-registry';
export { RealtimeWsAdapter } from './connections/realtime-ws.adapter';
export { RealtimeGateway } from './connections/realtime.gateway';
export { nativeFrameWriterLoaded, nativeFrameWriterStatus } from './connections/ws-frame';
export { setupRealtime } from './realtime.setup';
