import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from './app.config';

describe('loadConfig', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'rt-config-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('defaults to SQLite on port 3000 with a generated, persisted development secret', () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    const config = loadConfig({ DATA_DIR: dir });
    warn.mockRestore();
    expect(config.port).toBe(3000);
    expect(config.databaseUrl).toBeUndefined();
    expect(config.demoUsers).toBe(true);
    expect(config.nativeWrites).toBe(true);
    expect(config.backgroundThreadNice).toBe(19);
    expect(config.sqliteCheckpointNice).toBe(0);
    expect(config.httpAdapter).toBe('fastify');
    expect(config.jwt.secret).toHaveLength(64);
    expect(readFileSync(join(dir, 'jwt-secret'), 'utf8')).toBe(config.jwt.secret);
    expect(loadConfig({ DATA_DIR: dir }).jwt.secret).toBe(config.jwt.secret);
  });

  it('refuses to start in production without a JWT key, naming the variables', () => {
    expect(() => loadConfig({ DATA_DIR: dir, NODE_ENV: 'production' })).toThrow(
      /JWT_SECRET .* or JWT_PUBLIC_KEY .* must be set when NODE_ENV=production/,
    );
    const prod = loadConfig({ DATA_DIR: dir, NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(32) });
    expect(prod.demoUsers).toBe(false);
    expect(prod.demoData).toBe(false);
  });

  it.each([
    ['PORT', 'eighty'],
    ['PORT', '70000'],
    ['DATABASE_URL', 'mysql://localhost/db'],
    ['REDIS_URL', 'localhost:6379'],
    ['JWT_SECRET', 'short'],
    ['DEMO_USERS', 'maybe'],
    ['HTTP_ADAPTER', 'koa'],
    ['HEARTBEAT_INTERVAL_MS', '5'],
    ['SQLITE_CHECKPOINT_MS', 'often'],
    ['SQLITE_CHECKPOINT_MS', '-1'],
    ['BACKGROUND_THREAD_NICE', '20'],
    ['BACKGROUND_THREAD_NICE', 'low'],
    ['SQLITE_CHECKPOINT_NICE', '-1'],
    ['CHANGE_LOG_PREPARED', 'maybe'],
    ['AUDIT_MAX_AGE_MS', 'a year'],
    ['AUDIT_MAX_AGE_MS', '1000'],
    ['NATIVE_WRITES', 'maybe'],
    ['METRICS_EVENT_LOOP_RESOLUTION_MS', '0'],
    ['METRICS_EVENT_LOOP_RESOLUTION_MS', 'fine'],
  ])('fails fast on a bad %s, naming it', (name, value) => {
    let error: unknown;
    try {
      loadConfig({ DATA_DIR: dir, JWT_SECRET: 'x'.repeat(32), [name]: value });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toContain(name);
  });

  it('reads PostgreSQL, Redis and the limits', () => {
    const config = loadConfig({
      DATA_DIR: dir,
      JWT_SECRET: 'x'.repeat(32),
      DATABASE_URL: 'postgres://u@h:5432/db',
      REDIS_URL: 'redis://h:6379',
      MAX_CONNECTIONS_PER_USER: '7',
      SQLITE_CHECKPOINT_MS: '0',
      NATIVE_WRITES: 'off',
      AUDIT_MAX_AGE_MS: '86400000',
      BACKGROUND_THREAD_NICE: '0',
    });
    expect(config).toMatchObject({
      backgroundThreadNice: 0,
      auditMaxAgeMs: 86_400_000,
      sqliteCheckpointMs: 0,
      nativeWrites: false,
      databaseUrl: 'postgres://u@h:5432/db',
      redisUrl: 'redis://h:6379',
      limits: { maxConnectionsPerUser: 7 },
    });
  });
});
