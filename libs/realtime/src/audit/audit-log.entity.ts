import { EntitySchema } from 'typeorm';
import { keyColumn, KeyType } from '../common/key-column';

export type AuditAction =
  | 'connection_established'
  | 'connection_failed'
  | 'connection_closed'
  | 'subscription_created'
  | 'subscription_creation_failed'
  | 'subscription_ended'
  | 'subscription_revoked'
  | 'auth_failed'
  | 'rate_limited';

/**
 * One audited event. Written in batches by AuditService, read by admins over REST. A plain
 * class: its table is described by `auditLogSchema`, once per key width (see ChangeLogEntry).
 */
export class AuditLog {
  id: number;
  action: string;
  userId: string | null;
  connectionId: string | null;
  subscriptionId: string | null;
  outcome: string;
  details: Record<string, unknown> | null;
  ipAddress: string | null;
  userAgent: string | null;
  /** ISO time of the event (fixed width, so it sorts and compares as text on every driver) */
  createdAt: string;
}

export function auditLogSchema(key: KeyType): EntitySchema<AuditLog> {
  return new EntitySchema<AuditLog>({
    name: 'AuditLog',
    target: AuditLog,
    tableName: 'audit_logs',
    columns: {
      id: keyColumn(key),
      action: { type: 'varchar', length: 64 },
      userId: { type: 'varchar', length: 255, nullable: true },
      connectionId: { type: 'varchar', length: 64, nullable: true },
      subscriptionId: { type: 'varchar', length: 64, nullable: true },
      outcome: { type: 'varchar', length: 16 },
      details: { type: 'simple-json', nullable: true },
      ipAddress: { type: 'varchar', length: 64, nullable: true },
      userAgent: { type: 'varchar', length: 512, nullable: true },
      createdAt: { type: 'varchar', length: 30 },
    },
    indices: [
      { columns: ['action', 'id'] },
      { columns: ['userId', 'id'] },
      { columns: ['createdAt'] },
    ],
  });
}
