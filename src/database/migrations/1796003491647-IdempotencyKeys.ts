import { MigrationInterface, QueryRunner } from 'typeorm';

/** The sample app's `Idempotency-Key` store (src/common/idempotency-key.entity.ts). */
export class IdempotencyKeys1796003491647 implements MigrationInterface {
  name = 'IdempotencyKeys1796003491647';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      `CREATE TABLE "idempotency_key" ("userId" character varying(255) NOT NULL, "key" character varying(128) NOT NULL, "collection" character varying(128) NOT NULL, "documentId" character varying(255) NOT NULL, "createdAt" character varying(30) NOT NULL, CONSTRAINT "PK_703de5e39cfcdf2dee29ca4cd53" PRIMARY KEY ("userId", "key"))`,
    );
    await queryRunner.query(
      `CREATE INDEX "IDX_38536b1937c55d305af4d69a97" ON "idempotency_key" ("createdAt") `,
    );
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX "public"."IDX_38536b1937c55d305af4d69a97"`);
    await queryRunner.query(`DROP TABLE "idempotency_key"`);
  }
}
