import { Column, Entity, Index, PrimaryColumn } from 'typeorm';

/**
 * A create that named an `Idempotency-Key`: which document it made, so that a retry of the
 * same request (an offline queue replaying a POST whose response was lost) answers with
 * that document instead of making a second one. Written in the create's own transaction,
 * so a key is stored exactly when its document is. Keys are per user and kept 24 hours.
 */
@Entity('idempotency_key')
export class IdempotencyKey {
  @PrimaryColumn({ type: 'varchar', length: 255 })
  userId: string;

  @PrimaryColumn({ type: 'varchar', length: 128 })
  key: string;

  @Column({ type: 'varchar', length: 128 })
  collection: string;

  @Column({ type: 'varchar', length: 255 })
  documentId: string;

  /** ISO time (fixed width), for the retention sweep */
  @Index()
  @Column({ type: 'varchar', length: 30 })
  createdAt: string;
}
