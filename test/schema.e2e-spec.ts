import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource } from 'typeorm';
import {
  AuditLog,
  AuditService,
  ChangeLogEntry,
  ChangeLogService,
  REALTIME_ENTITIES,
} from '@app/realtime';
import { narrowKeys } from '../libs/realtime/src/common/key-column';
import { IdempotencyKey } from '../src/common/idempotency-key.entity';
import { databaseOptions, MIGRATIONS } from '../src/database/database.options';
import { Project } from '../src/projects/project.entity';
import { Task } from '../src/tasks/task.entity';
import { seedTask, startTestApp, TestApp, USERS } from './utils/app';
import { createPgDatabase, postgresAvailable } from './utils/services';
import { SseClient } from './utils/sse-client';
import { WsClient } from './utils/ws-client';

/** The last value of PostgreSQL's `integer`, where a `serial` key ends. */
const INT_MAX = 2_147_483_647;

/** The types of the library's keys and of the sequences behind them. */
async function keyTypes(ds: DataSource) {
  const columns = (await ds.query(
    `SELECT table_name || '.' || column_name AS key, data_type FROM information_schema.columns WHERE (table_name, column_name) IN (('change_log', 'seq'), ('audit_logs', 'id')) ORDER BY 1`,
  )) as { key: string; data_type: string }[];
  const sequences = (await ds.query(
    `SELECT sequencename AS key, data_type FROM pg_sequences WHERE sequencename IN ('change_log_seq_seq', 'audit_logs_id_seq') ORDER BY 1`,
  )) as { key: string; data_type: string }[];
  return Object.fromEntries([...columns, ...sequences].map((r) => [r.key, r.data_type]));
}

const ALL_BIGINT = {
  'audit_logs.id': 'bigint',
  audit_logs_id_seq: 'bigint',
  'change_log.seq': 'bigint',
  change_log_seq_seq: 'bigint',
};

describe('the library keys on PostgreSQL are bigint [postgres]', () => {
  let db: { url: string; drop: () => Promise<void> } | undefined;
  let t: TestApp | undefined;

  beforeAll(async () => {
    if (!(await postgresAvailable())) {
      console.warn('!!! SKIPPING "the library keys on PostgreSQL": the server is unreachable');
    }
  });
  afterEach(async () => {
    SseClient.closeAll();
    await t?.close();
    t = undefined;
    await db?.drop();
    db = undefined;
  });

  it("the sample app's migrations make exactly its entities' schema: nothing pending, the keys and their sequences bigint", async () => {
    if (!(await postgresAvailable())) return;
    db = await createPgDatabase();
    const ds = new DataSource(databaseOptions({ databaseUrl: db.url, dataDir: tmpdir() }));
    await ds.initialize();
    try {
      const pending = await ds.driver.createSchemaBuilder().log();
      expect(pending.upQueries.map((q) => q.query)).toEqual([]);
      expect(await keyTypes(ds)).toEqual(ALL_BIGINT);
    } finally {
      await ds.destroy();
    }
  });

  it('a database of the earlier schema (serial keys near their end, logged changes and audit entries) is widened in place at start: rows and seqs kept; changes past 2^31 reach WebSocket and SSE clients, resume, and page in the audit API', async () => {
    if (!(await postgresAvailable())) return;
    db = await createPgDatabase();

    // the schema of earlier versions: the first three migrations, the integer entities
    const old = new DataSource({
      type: 'postgres',
      url: db.url,
      entities: [Project, Task, IdempotencyKey, ...REALTIME_ENTITIES],
      migrations: MIGRATIONS.slice(0, 3),
      migrationsRun: true,
    });
    await old.initialize();
    const now = new Date().toISOString();
    await old.query(`SELECT setval('change_log_seq_seq', ${INT_MAX - 10})`);
    for (let i = 0; i < 3; i++) {
      await old.query(
        `INSERT INTO change_log ("database", "collection", "documentId", "operation", "changedFields", "createdAt") VALUES ('default', 'tasks', 'old-${i}', 'insert', '[]', $1)`,
        [now],
      );
    }
    await old.query(`SELECT setval('audit_logs_id_seq', ${INT_MAX - 2})`);
    for (const action of ['connection_established', 'connection_closed']) {
      await old.query(
        `INSERT INTO audit_logs ("action", "userId", "outcome", "createdAt") VALUES ($1, 'old', 'success', $2)`,
        [action, now],
      );
    }
    expect(await narrowKeys(old, [ChangeLogEntry, AuditLog])).toEqual([
      'change_log.seq',
      'audit_logs.id',
    ]);
    // what the widening is for: the serial is spent
    await expect(
      old.query(
        `INSERT INTO audit_logs ("action", "outcome", "createdAt") VALUES ('x', 'success', $1)`,
        [now],
      ),
    ).rejects.toThrow(/reached maximum value of sequence/);
    await old.query(`SELECT setval('change_log_seq_seq', ${INT_MAX - 3})`);
    await old.destroy();

    const app = await startTestApp('postgres', { DATABASE_URL: db.url });
    t = app;
    const ds = app.app.get(DataSource);
    expect(await keyTypes(ds)).toEqual(ALL_BIGINT);
    expect(await app.app.get(ChangeLogService).narrowKeys()).toEqual([]);
    const kept = await ds.getRepository(ChangeLogEntry).find({ order: { seq: 'ASC' } });
    expect(kept.map((r) => [r.seq, r.documentId])).toEqual([
      [INT_MAX - 9, 'old-0'],
      [INT_MAX - 8, 'old-1'],
      [INT_MAX - 7, 'old-2'],
    ]);

    // writes after the upgrade draw seqs across the old limit, in order
    const first = await seedTask(app, { title: 'v1' });
    const c = await WsClient.open(app.ws, app.token(USERS.alice));
    const doc = { collection: 'tasks', documentId: first.id };
    const sub = await c.subscribe(doc);
    const retitle = async (title: string) =>
      expect(
        (await app.api(USERS.alice, 'PATCH', `/api/tasks/${first.id}`, { title })).status,
      ).toBe(200);
    for (const title of ['v2', 'v3', 'v4']) await retitle(title);
    const live = await c.waitChanges(sub, 3);
    const log = await ds.getRepository(ChangeLogEntry).find({ order: { seq: 'ASC' } });
    expect(log.map((r) => r.seq)).toEqual([
      INT_MAX - 9,
      INT_MAX - 8,
      INT_MAX - 7,
      INT_MAX - 2, // the project
      INT_MAX - 1, // the task
      INT_MAX,
      INT_MAX + 1,
      INT_MAX + 2,
    ]);
    expect(live.map((x) => [x.seq, x.document.title])).toEqual([
      [String(INT_MAX), 'v2'],
      [String(INT_MAX + 1), 'v3'],
      [String(INT_MAX + 2), 'v4'],
    ]);
    expect(await app.app.get(ChangeLogService).head()).toBe(INT_MAX + 2);

    // a WebSocket client resumes from a seq past 2^31 and misses nothing
    c.close();
    await c.waitClose();
    for (const title of ['v5', 'v6']) await retitle(title);
    const again = await WsClient.open(app.ws, app.token(USERS.alice));
    const resumed = await again.subscribe(doc, { resumeFrom: String(INT_MAX + 1) });
    const replay = await again.waitChanges(resumed, 3);
    expect(replay.map((x) => [x.seq, x.document.title])).toEqual([
      [String(INT_MAX + 2), 'v4'],
      [String(INT_MAX + 3), 'v5'],
      [String(INT_MAX + 4), 'v6'],
    ]);
    expect(again.messages.some((m) => m.type === 'resync_required')).toBe(false);
    again.close();
    await again.waitClose();

    // and an EventSource from its Last-Event-ID
    const sse = await SseClient.open(app.http, app.token(USERS.alice), [doc], {
      'last-event-id': String(INT_MAX + 3),
    });
    const sseSub = (await sse.next((e) => e.type === 'subscription_created')).data
      .subscriptionId as string;
    await retitle('v7');
    const streamed = await sse.waitChanges(sseSub, 2);
    expect(streamed.map((x) => [x.seq, x.document.title])).toEqual([
      [String(INT_MAX + 4), 'v6'],
      [String(INT_MAX + 5), 'v7'],
    ]);
    expect(sse.events.filter((e) => e.type === 'data_change').at(-1)?.lastEventId).toBe(
      String(INT_MAX + 5),
    );

    // the audit log kept its rows, and pages by cursor past 2^31
    await app.app.get(AuditService).flush();
    const page = async (cursor?: string) => {
      const r = await app.api(
        USERS.alice,
        'GET',
        `/admin/audit-logs?limit=2${cursor ? `&cursor=${cursor}` : ''}`,
      );
      expect(r.status).toBe(200);
      return r.body as { items: { id: string }[]; nextCursor: string | null };
    };
    const ids: string[] = [];
    let cursor: string | undefined;
    do {
      const p = await page(cursor);
      ids.push(...p.items.map((x) => x.id));
      cursor = p.nextCursor ?? undefined;
    } while (cursor);
    const numbers = ids.map(Number);
    expect(numbers).toEqual([...numbers].sort((a, b) => b - a));
    expect(new Set(ids).size).toBe(ids.length);
    expect(numbers.slice(-2)).toEqual([INT_MAX, INT_MAX - 1]);
    expect(numbers.filter((id) => id > INT_MAX).length).toBeGreaterThanOrEqual(4);
  });
});

/** The library's two tables as earlier versions created them on SQLite. */
const EARLIER_SQLITE = [
  'CREATE TABLE "audit_logs" ("id" integer PRIMARY KEY AUTOINCREMENT NOT NULL, "action" varchar(64) NOT NULL, "userId" varchar(255), "connectionId" varchar(64), "subscriptionId" varchar(64), "outcome" varchar(16) NOT NULL, "details" text, "ipAddress" varchar(64), "userAgent" varchar(512), "createdAt" varchar(30) NOT NULL)',
  'CREATE INDEX "IDX_12ab32384fbb76a85d5c361c88" ON "audit_logs" ("userId", "id") ',
  'CREATE INDEX "IDX_96be8397eb45d1f40d84fcb9be" ON "audit_logs" ("action", "id") ',
  'CREATE INDEX "IDX_c69efb19bf127c97e6740ad530" ON "audit_logs" ("createdAt") ',
  'CREATE TABLE "change_log" ("seq" integer PRIMARY KEY AUTOINCREMENT NOT NULL, "database" varchar(64) NOT NULL, "collection" varchar(128) NOT NULL, "documentId" varchar(255) NOT NULL, "operation" varchar(8) NOT NULL, "before" text, "after" text, "changedFields" text NOT NULL, "actorId" varchar(255), "version" integer, "createdAt" varchar(30) NOT NULL)',
  'CREATE INDEX "IDX_80b290f388bfa00fcae8202532" ON "change_log" ("collection", "seq") ',
];

describe('the library keys on SQLite', () => {
  it('a SQLite file of earlier versions is opened as it is: its tables are not rebuilt, its log is kept and seqs go on from it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rt-schema-'));
    const file = new Database(join(dir, 'realtime.sqlite'));
    for (const sql of EARLIER_SQLITE) file.exec(sql);
    file
      .prepare(
        `INSERT INTO change_log ("seq", "database", "collection", "documentId", "operation", "changedFields", "createdAt") VALUES (41, 'default', 'tasks', 'old', 'insert', '[]', ?)`,
      )
      .run(new Date().toISOString());
    file.close();

    const app = await startTestApp('sqlite', { DATA_DIR: dir });
    try {
      const ds = app.app.get(DataSource);
      const tables = (await ds.query(
        `SELECT sql FROM sqlite_master WHERE tbl_name IN ('change_log', 'audit_logs') AND sql IS NOT NULL ORDER BY tbl_name, type DESC, name`,
      )) as { sql: string }[];
      expect(tables.map((r) => r.sql).sort()).toEqual([...EARLIER_SQLITE].sort());

      const task = await seedTask(app, { title: 'after' });
      const log = await ds.getRepository(ChangeLogEntry).find({ order: { seq: 'ASC' } });
      expect(log.map((r) => [r.seq, r.documentId])).toEqual([
        [41, 'old'],
        [42, task.projectId],
        [43, task.id],
      ]);
      expect(await app.app.get(ChangeLogService).narrowKeys()).toEqual([]);
    } finally {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
