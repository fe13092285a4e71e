import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { DataSourceOptions } from 'typeorm';
import { realtimeEntities } from '@app/realtime';
import { IdempotencyKey } from '../common/idempotency-key.entity';
import { Project } from '../projects/project.entity';
import { Task } from '../tasks/task.entity';
import { Init1764400000000 } from './migrations/1764400000000-Init';
import { ChangeLogNoCreatedAtIndex1764900000000 } from './migrations/1764900000000-ChangeLogNoCreatedAtIndex';
import { IdempotencyKeys1796003491647 } from './migrations/1796003491647-IdempotencyKeys';
import { BigintKeys1796100000000 } from './migrations/1796100000000-BigintKeys';

/** The app's entities and the library's, for a DataSource of this type. */
export function appEntities(type: DataSourceOptions['type']) {
  return [Project, Task, IdempotencyKey, ...realtimeEntities(type)];
}

/** The migrations of the PostgreSQL schema, in order. */
export const MIGRATIONS = [
  Init1764400000000,
  ChangeLogNoCreatedAtIndex1764900000000,
  IdempotencyKeys1796003491647,
  BigintKeys1796100000000,
];

/**
 * PostgreSQL when `DATABASE_URL` is set (schema by migrations, run at start), else an
 * embedded SQLite file in the data folder (schema synchronised: no set-up at all).
 */
export function databaseOptions(config: {
  databaseUrl?: string;
  dataDir: string;
}): DataSourceOptions {
  if (config.databaseUrl) {
    return {
      type: 'postgres',
      url: config.databaseUrl,
      entities: appEntities('postgres'),
      migrations: MIGRATIONS,
      migrationsRun: true,
      synchronize: false,
      extra: { max: 20 },
    };
  }
  mkdirSync(config.dataDir, { recursive: true });
  return {
    type: 'better-sqlite3',
    database: join(config.dataDir, 'realtime.sqlite'),
    entities: appEntities('better-sqlite3'),
    synchronize: true,
    prepareDatabase: prepareSqlite,
  };
}

/**
 * How the embedded SQLite file is opened: WAL (readers never block the writer), and commits
 * not fsynced one by one (`NORMAL`: a power cut may lose the last commits, never the file's
 * consistency). The write-path benchmark opens its bare-ORM file with the same function.
 */
export function prepareSqlite(db: { pragma(s: string): unknown }): void {
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
}
