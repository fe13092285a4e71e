import { MigrationInterface, QueryRunner } from 'typeorm';

export class Init1764400000000 implements MigrationInterface {
  name = 'Init1764400000000';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      `CREATE TABLE "audit_logs" ("id" SERIAL NOT NULL, "action" character varying(64) NOT NULL, "userId" character varying(255), "connectionId" character varying(64), "subscriptionId" character varying(64), "outcome" character varying(16) NOT NULL, "details" text, "ipAddress" character varying(64), "userAgent" character varying(512), "createdAt" character varying(30) NOT NULL, CONSTRAINT "PK_1bb179d048bbc581caa3b013439" PRIMARY KEY ("id"))`,
    );
    await queryRunner.query(
      `CREATE INDEX "IDX_c69efb19bf127c97e6740ad530" ON "audit_logs" ("createdAt") `,
    );
    await queryRunner.query(
      `CREATE INDEX "IDX_12ab32384fbb76a85d5c361c88" ON "audit_logs" ("userId", "id") `,
    );
    await queryRunner.query(
      `CREATE INDEX "IDX_96be8397eb45d1f40d84fcb9be" ON "audit_logs" ("action", "id") `,
    );
    await queryRunner.query(
      `CREATE TABLE "change_log" ("seq" SERIAL NOT NULL, "database" character varying(64) NOT NULL, "collection" character varying(128) NOT NULL, "documentId" character varying(255) NOT NULL, "operation" character varying(8) NOT NULL, "before" text, "after" text, "changedFields" text NOT NULL, "actorId" character varying(255), "version" integer, "createdAt" character varying(30) NOT NULL, CONSTRAINT "PK_8ddf0d4f5f0df5f2ae5a877e3ff" PRIMARY KEY ("seq"))`,
    );
    await queryRunner.query(
      `CREATE INDEX "IDX_0aa9bb06c5eb1671c85c76110d" ON "change_log" ("createdAt") `,
    );
    await queryRunner.query(
      `CREATE INDEX "IDX_80b290f388bfa00fcae8202532" ON "change_log" ("collection", "seq") `,
    );
    await queryRunner.query(
      `CREATE TABLE "projects" ("id" uuid NOT NULL DEFAULT uuid_generate_v4(), "name" character varying(200) NOT NULL, "ownerId" character varying(255) NOT NULL, "department" character varying(100) NOT NULL, "createdAt" TIMESTAMP NOT NULL DEFAULT now(), "updatedAt" TIMESTAMP NOT NULL DEFAULT now(), "version" integer NOT NULL, CONSTRAINT "PK_6271df0a7aed1d6c0691ce6ac50" PRIMARY KEY ("id"))`,
    );
    await queryRunner.query(
      `CREATE INDEX "IDX_b48d67b90f197cd3f05f976c4b" ON "projects" ("department") `,
    );
    await queryRunner.query(
      `CREATE TABLE "tasks" ("id" uuid NOT NULL DEFAULT uuid_generate_v4(), "projectId" character varying(36) NOT NULL, "title" character varying(500) NOT NULL, "status" character varying(8) NOT NULL DEFAULT 'todo', "priority" integer NOT NULL DEFAULT '3', "assigneeId" character varying(255), "ownerId" character varying(255) NOT NULL, "department" character varying(100) NOT NULL, "budget" double precision, "tags" text NOT NULL, "dueAt" TIMESTAMP, "createdAt" TIMESTAMP NOT NULL DEFAULT now(), "updatedAt" TIMESTAMP NOT NULL DEFAULT now(), "version" integer NOT NULL, CONSTRAINT "PK_8d12ff38fcc62aaba2cab748772" PRIMARY KEY ("id"))`,
    );
    await queryRunner.query(
      `CREATE INDEX "IDX_e08fca67ca8966e6b9914bf295" ON "tasks" ("projectId") `,
    );
    await queryRunner.query(`CREATE INDEX "IDX_6086c8dafbae729a930c04d865" ON "tasks" ("status") `);
    await queryRunner.query(
      `CREATE INDEX "IDX_9a16d2c86252529f622fa53f1e" ON "tasks" ("assigneeId") `,
    );
    await queryRunner.query(
      `CREATE INDEX "IDX_31396e90ee2c6327044c633f1e" ON "tasks" ("department") `,
    );
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX "public"."IDX_31396e90ee2c6327044c633f1e"`);
    await queryRunner.query(`DROP INDEX "public"."IDX_9a16d2c86252529f622fa53f1e"`);
    await queryRunner.query(`DROP INDEX "public"."IDX_6086c8dafbae729a930c04d865"`);
    await queryRunner.query(`DROP INDEX "public"."IDX_e08fca67ca8966e6b9914bf295"`);
    await queryRunner.query(`DROP TABLE "tasks"`);
    await queryRunner.query(`DROP INDEX "public"."IDX_b48d67b90f197cd3f05f976c4b"`);
    await queryRunner.query(`DROP TABLE "projects"`);
    await queryRunner.query(`DROP INDEX "public"."IDX_80b290f388bfa00fcae8202532"`);
    await queryRunner.query(`DROP INDEX "public"."IDX_0aa9bb06c5eb1671c85c76110d"`);
    await queryRunner.query(`DROP TABLE "change_log"`);
    await queryRunner.query(`DROP INDEX "public"."IDX_96be8397eb45d1f40d84fcb9be"`);
    await queryRunner.query(`DROP INDEX "public"."IDX_12ab32384fbb76a85d5c361c88"`);
    await queryRunner.query(`DROP INDEX "public"."IDX_c69efb19bf127c97e6740ad530"`);
    await queryRunner.query(`DROP TABLE "audit_logs"`);
  }
}
