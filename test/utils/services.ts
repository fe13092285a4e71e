import { Client } from 'pg';
import { randomBytes } from 'node:crypto';

export const PG_URL = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const required = process.env.REQUIRE_SERVICES === '1';

let pgAvailable: Promise<boolean> | undefined;

/** Whether PostgreSQL answers; under REQUIRE_SERVICES=1 its absence fails the run. */
export function postgresAvailable(): Promise<boolean> {
  pgAvailable ??= (async () => {
    const client = new Client({ connectionString: PG_URL, connectionTimeoutMillis: 2000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return true;
    } catch (e) {
      if (required)
        throw new Error(
          `REQUIRE_SERVICES=1 but PostgreSQL at ${PG_URL} is unreachable: ${(e as Error).message}`,
        );
      console.warn(
        `\n!!! PostgreSQL at ${PG_URL} is unreachable: PostgreSQL tests are SKIPPED (${(e as Error).message})\n`,
      );
      return false;
    } finally {
      await client.end().catch(() => undefined);
    }
  })();
  return pgAvailable;
}

/** A fresh database for one test app, so runs never collide; returns its URL and a drop. */
export async function createPgDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `rt_e2e_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const admin = new Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = PG_URL.replace(/\/[^/]*$/, `/${name}`);
  return {
    url,
    drop: async () => {
      const c = new Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
      await c.end();
    },
  };
}

/** The databases to run a suite against: SQLite always, PostgreSQL when it answers. */
export const DATABASES = ['sqlite', 'postgres'] as const;
export type DatabaseKind = (typeof DATABASES)[number];
