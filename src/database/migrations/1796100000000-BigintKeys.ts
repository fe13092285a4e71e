import { MigrationInterface, QueryRunner } from 'typeorm';

/** The library's generated keys, by table; `realtimeEntities('postgres')` declares them `bigint`. */
const KEYS = [
  ['change_log', 'seq'],
  ['audit_logs', 'id'],
] as const;

/**
 * The change log's `seq` and the audit log's `id` become `bigint` (from `serial`, which runs
 * out after 2 147 483 647 rows): the column and the sequence behind it, whose type bounds
 * its values too. Rewrites both tables under an exclusive lock (README, "Upgrading").
 */
export class BigintKeys1796100000000 implements MigrationInterface {
  name = 'BigintKeys1796100000000';

  public async up(queryRunner: QueryRunner): Promise<void> {
    for (const [table, column] of KEYS) await widen(queryRunner, table, column, 'bigint');
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    // fails, changing nothing, once a key beyond the integer range exists
    for (const [table, column] of KEYS) await widen(queryRunner, table, column, 'integer');
  }
}

async function widen(
  queryRunner: QueryRunner,
  table: string,
  column: string,
  type: 'bigint' | 'integer',
): Promise<void> {
  const [{ sequence }] = (await queryRunner.query(
    `SELECT pg_get_serial_sequence($1, $2) AS sequence`,
    [`"${table}"`, column],
  )) as { sequence: string }[];
  await queryRunner.query(`ALTER TABLE "${table}" ALTER COLUMN "${column}" TYPE ${type}`);
  await queryRunner.query(`ALTER SEQUENCE ${sequence} AS ${type}`);
}
