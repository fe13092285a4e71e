import type { INestApplication } from '@nestjs/common';
import jwt from 'jsonwebtoken';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { AuditService, TransactionRunner } from '@app/realtime';
import { createApp } from '../../src/app.factory';
import { loadConfig } from '../../src/config/app.config';
import { Task } from '../../src/tasks/task.entity';
import { createPgDatabase, DatabaseKind, postgresAvailable } from './services';
import { waitFor } from './wait';

export interface TestUser {
  sub: string;
  roles: string[];
  attrs?: Record<string, unknown>;
}

export const USERS = {
  alice: { sub: 'alice', roles: ['admin'], attrs: {} },
  bob: { sub: 'bob', roles: ['manager'], attrs: { department: 'eng' } },
  carol: { sub: 'carol', roles: ['member'], attrs: { department: 'eng' } },
  dave: { sub: 'dave', roles: ['member'], attrs: { department: 'sales' } },
  erin: { sub: 'erin', roles: ['manager'], attrs: { department: 'sales' } },
} satisfies Record<string, TestUser>;

export interface TestApp {
  app: INestApplication;
  db: DatabaseKind;
  port: number;
  http: string;
  ws: string;
  secret: string;
  /** a token signed with the app's key (as another service would) */
  token(user: TestUser, options?: { expiresInSeconds?: number }): string;
  /** fetch against the app with a user's token */
  api(
    user: TestUser | null,
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: any; headers: Headers }>;
  close(): Promise<void>;
}

/**
 * Starts the real app on a free port, against a fresh SQLite file or a fresh PostgreSQL
 * database. `env` adds or overrides environment variables (limits, heartbeat, …).
 */
export async function startTestApp(
  db: DatabaseKind,
  env: Record<string, string> = {},
): Promise<TestApp> {
  const dataDir = mkdtempSync(join(tmpdir(), 'rt-e2e-'));
  const secret = randomBytes(24).toString('hex');
  let dropDb: (() => Promise<void>) | undefined;
  const vars: Record<string, string> = {
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    JWT_SECRET: secret,
    LOG_LEVEL: 'error',
    DEMO_USERS: 'true',
    // the whole suite runs on either adapter (README, "Tests")
    ...(process.env.HTTP_ADAPTER ? { HTTP_ADAPTER: process.env.HTTP_ADAPTER } : {}),
    ...env,
  };
  // a DATABASE_URL in `env` is the caller's database (made and dropped by the caller)
  if (db === 'postgres' && !env.DATABASE_URL) {
    if (!(await postgresAvailable())) throw new Error('PostgreSQL is not available');
    const created = await createPgDatabase();
    vars.DATABASE_URL = created.url;
    dropDb = created.drop;
  }
  const config = loadConfig(vars);
  const app = await createApp(config);
  await app.listen(0, '127.0.0.1');
  const port = (app.getHttpServer().address() as AddressInfo).port;
  const http = `http://127.0.0.1:${port}`;
  const token = (user: TestUser, options: { expiresInSeconds?: number } = {}) =>
    jwt.sign({ sub: user.sub, roles: user.roles, attrs: user.attrs ?? {} }, secret, {
      algorithm: 'HS256',
      expiresIn: options.expiresInSeconds ?? 3600,
    });
  return {
    app,
    db,
    port,
    http,
    ws: `ws://127.0.0.1:${port}/realtime/ws`,
    secret,
    token,
    async api(user, method, path, body, headers = {}) {
      const res = await fetch(http + path, {
        method,
        headers: {
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(user ? { authorization: `Bearer ${token(user)}` } : {}),
          ...headers,
        },
        body:
          body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        // not JSON: keep the text
      }
      return { status: res.status, body: parsed as any, headers: res.headers };
    },
    async close() {
      await app.close();
      await dropDb?.();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * `describe` once per database. PostgreSQL runs when it answers; otherwise it is skipped
 * with a loud message, except under REQUIRE_SERVICES=1, where its absence fails.
 */
export function describeEachDb(name: string, fn: (db: DatabaseKind) => void): void {
  describe.each(['sqlite', 'postgres'] as DatabaseKind[])(`${name} [%s]`, (db) => {
    if (db === 'postgres') {
      beforeAll(async () => {
        if (!(await postgresAvailable())) {
          console.warn(`!!! SKIPPING "${name}" on PostgreSQL: the server is unreachable`);
        }
      });
    }
    fn(db);
  });
}

/** Creates a project and a task as admin; returns the task. */
export async function seedTask(
  t: TestApp,
  fields: Record<string, unknown> = {},
  projectId?: string,
) {
  let pid = projectId;
  if (!pid) {
    const p = await t.api(USERS.alice, 'POST', '/api/projects', {
      name: 'Seed',
      department: fields.department ?? 'eng',
    });
    if (p.status !== 201)
      throw new Error(`project create failed: ${p.status} ${JSON.stringify(p.body)}`);
    pid = p.body.id as string;
  }
  const r = await t.api(USERS.alice, 'POST', '/api/tasks', {
    projectId: pid,
    title: 'Task',
    department: 'eng',
    ...fields,
  });
  if (r.status !== 201)
    throw new Error(`task create failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as Record<string, any>;
}

/** The audit log's items for `query` (admin API; buffered entries are flushed first). */
export async function auditItems(t: TestApp, query: string): Promise<any[]> {
  await t.app.get(AuditService).flush();
  const r = await t.api(USERS.alice, 'GET', `/admin/audit-logs?limit=500&${query}`);
  expect(r.status).toBe(200);
  return r.body.items;
}

/** Waits until the audit log's items for `query` include `action`; returns them all. */
export function waitForAudit(t: TestApp, query: string, action: string): Promise<any[]> {
  return waitFor(async () => {
    const found = await auditItems(t, query);
    return found.some((x) => x.action === action) ? found : undefined;
  }, `${action} in the audit log`);
}

/**
 * Saves `count` tasks of a project in one transaction, each with ~0.5 MB of tags (through
 * the entity: the REST schema caps tags), so that their changes make one huge frame for a
 * subscriber of the project. Their ids, in save order.
 */
export async function saveBigTasks(
  t: TestApp,
  projectId: string,
  count: number,
): Promise<string[]> {
  const tags = Array.from({ length: 5_000 }, (_, i) => `tag-${i}-${'x'.repeat(90)}`);
  const ids: string[] = [];
  await t.app.get(TransactionRunner).transaction(async (m) => {
    const repo = m.getRepository(Task);
    for (let i = 0; i < count; i++) {
      const task = repo.create({
        projectId,
        title: `big ${i}`,
        ownerId: 'x',
        department: 'eng',
        tags,
      });
      ids.push((await repo.save(task)).id);
    }
  });
  return ids;
}
