import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The change log's `createdAt` index goes: every commit paid for it, and retention by age
 * now finds its bound in seq order (ChangeLogService.prune).
 */
export class ChangeLogNoCreatedAtIndex1764900000000 implements MigrationInterface {
  name = 'ChangeLogNoCreatedAtIndex1764900000000';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX IF EXISTS "IDX_0aa9bb06c5eb1671c85c76110d"`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      `CREATE INDEX "IDX_0aa9bb06c5eb1671c85c76110d" ON "change_log" ("createdAt") `,
    );
  }
}
