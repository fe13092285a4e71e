import { EntitySchema } from 'typeorm';
import { keyColumn, KeyType } from '../common/key-column';

/**
 * The change log: one row per committed change, written in the same transaction as the
 * change itself. `seq` is drawn under a transaction-scoped lock, so seq order is commit
 * order; it is the source of truth for resume and for nodes that missed a bus message.
 *
 * A plain class: its table is described by `changeLogSchema`, once per key width (the
 * DataSource registers one of them through `realtimeEntities(type)`); repositories are
 * still asked for by this class.
 */
export class ChangeLogEntry {
  seq: number;
  database: string;
  collection: string;
  documentId: string;
  operation: string;
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
  changedFields: string[];
  actorId: string | null;
  version: number | null;
  /**
   * ISO time (fixed width). Not indexed: an index costs every commit a page write, and
   * retention by age finds its bound walking the seq order from the oldest row instead.
   */
  createdAt: string;
}

export function changeLogSchema(key: KeyType): EntitySchema<ChangeLogEntry> {
  return new EntitySchema<ChangeLogEntry>({
    name: 'ChangeLogEntry',
    target: ChangeLogEntry,
    tableName: 'change_log',
    columns: {
      seq: keyColumn(key),
      database: { type: 'varchar', length: 64 },
      collection: { type: 'varchar', length: 128 },
      documentId: { type: 'varchar', length: 255 },
      operation: { type: 'varchar', length: 8 },
      before: { type: 'simple-json', nullable: true },
      after: { type: 'simple-json', nullable: true },
      changedFields: { type: 'simple-json' },
      actorId: { type: 'varchar', length: 255, nullable: true },
      version: { type: 'integer', nullable: true },
      createdAt: { type: 'varchar', length: 30 },
    },
    indices: [{ columns: ['collection', 'seq'] }],
  });
}
