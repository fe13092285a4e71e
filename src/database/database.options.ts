import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { DataSourceOptions } from 'typeorm';
import { REALTIME_ENTITIES } from '@app/realtime';
import { IdempotencyKey } from '../common/idempotency-key.entity';
import { Project } from '../projects/project.entity';
import { Task } from '../tasks/task.entity';
import { Init1764400000000 } from './migrations/1764400000000-Init';
import { ChangeLogNoCreatedAtIndex1764900000000 } from './migrations/1764900000000-ChangeLogNoCreatedAtIndex';
import { IdempotencyKeys1796003491647 } from './migrations/1796003491647-IdempotencyKeys';

export const APP_ENTITIES = [Project, Task, IdempotencyKey, ...REALTIME_ENTITIES];

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
      entities: APP_ENTITIES,
      migrations: [
        Init1764400000000,
        ChangeLogNoCreatedAtIndex1764900000000,
        IdempotencyKeys1796003491647,
      ],
      migrationsRun: true,
      synchronize: false,
      extra: { max: 20 },
    };
  }
  mkdirSync(config.dataDir, { recursive: true });
  return {
    type: 'better-sqlite3',
    database: join(config.dataDir, 'realtime.sqlite'),
    entities: APP_ENTITIES,
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
