import { Column, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';

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

/** One audited event. Written in batches by AuditService, read by admins over REST. */
@Entity('audit_logs')
@Index(['action', 'id'])
@Index(['userId', 'id'])
export class AuditLog {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: 'varchar', length: 64 })
  action: string;

  @Column({ type: 'varchar', length: 255, nullable: true })
  userId: string | null;

  @Column({ type: 'varchar', length: 64, nullable: true })
  connectionId: string | null;

  @Column({ type: 'varchar', length: 64, nullable: true })
  subscriptionId: string | null;

  @Column({ type: 'varchar', length: 16 })
  outcome: string;

  @Column({ type: 'simple-json', nullable: true })
  details: Record<string, unknown> | null;

  @Column({ type: 'varchar', length: 64, nullable: true })
  ipAddress: string | null;

  @Column({ type: 'varchar', length: 512, nullable: true })
  userAgent: string | null;

  /** ISO time of the event (fixed width, so it sorts and compares as text on every driver) */
  @Index()
  @Column({ type: 'varchar', length: 30 })
  createdAt: string;
}
