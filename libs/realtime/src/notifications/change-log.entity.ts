import { Column, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';

/**
 * The change log: one row per committed change, written in the same transaction as the
 * change itself. `seq` is drawn under a transaction-scoped lock, so seq order is commit
 * order; it is the source of truth for resume and for nodes that missed a bus message.
 */
@Entity('change_log')
@Index(['collection', 'seq'])
export class ChangeLogEntry {
  @PrimaryGeneratedColumn()
  seq: number;

  @Column({ type: 'varchar', length: 64 })
  database: string;

  @Column({ type: 'varchar', length: 128 })
  collection: string;

  @Column({ type: 'varchar', length: 255 })
  documentId: string;

  @Column({ type: 'varchar', length: 8 })
  operation: string;

  @Column({ type: 'simple-json', nullable: true })
  before: Record<string, unknown> | null;

  @Column({ type: 'simple-json', nullable: true })
  after: Record<string, unknown> | null;

  @Column({ type: 'simple-json' })
  changedFields: string[];

  @Column({ type: 'varchar', length: 255, nullable: true })
  actorId: string | null;

  @Column({ type: 'integer', nullable: true })
  version: number | null;

  /**
   * ISO time (fixed width). Not indexed: an index costs every commit a page write, and
   * retention by age finds its bound walking the seq order from the oldest row instead.
   */
  @Column({ type: 'varchar', length: 30 })
  createdAt: string;
}
