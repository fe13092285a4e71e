import { Logger } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'], {
    errorMap: () => ({ message: 'must be true or false' }),
  })
  .transform((v) => ['true', '1', 'yes', 'on'].includes(v));
const int = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .refine((n) => n >= min && n <= max, `must be between ${min} and ${max}`);

/** Every environment variable the app reads, validated at start-up. */
const EnvSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: int(0, 65535).default('3000'),
  HOST: z.string().default('0.0.0.0'),
  HTTP_ADAPTER: z.enum(['fastify', 'express']).default('fastify'),
  DATA_DIR: z.string().default('./data'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL (leave it unset for embedded SQLite)')
    .optional(),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must be a redis:// URL')
    .optional(),
  JWT_SECRET: z.string().min(16, 'must be at least 16 characters').optional(),
  JWT_PUBLIC_KEY: z.string().includes('BEGIN', { message: 'must be a PEM public key' }).optional(),
  JWT_PRIVATE_KEY: z
    .string()
    .includes('BEGIN', { message: 'must be a PEM private key' })
    .optional(),
  JWT_ISSUER: z.string().optional(),
  JWT_AUDIENCE: z.string().optional(),
  JWT_TTL_SECONDS: int(60, 7 * 24 * 3600).default('3600'),
  DEMO_USERS: bool.optional(),
  DEMO_DATA: bool.optional(),
  HEARTBEAT_INTERVAL_MS: int(1000, 600_000).default('30000'),
  METRICS_EVENT_LOOP_RESOLUTION_MS: int(1, 60_000).default('100'),
  MAX_CONNECTIONS_PER_USER: int(1, 1_000_000).optional(),
  MAX_SUBSCRIPTIONS_PER_CONNECTION: int(1, 100_000).optional(),
  CONNECTIONS_PER_IP_PER_MINUTE: int(1, 10_000_000).optional(),
  MESSAGES_PER_SECOND: int(1, 1_000_000).optional(),
  MESSAGE_BURST: int(1, 1_000_000).optional(),
  MAX_BUFFERED_BYTES: int(1024, 1024 * 1024 * 1024).optional(),
  CHANGE_LOG_MAX_AGE_MS: int(1000, 365 * 24 * 3600 * 1000).optional(),
  CHANGE_LOG_MAX_ROWS: int(1, 1_000_000_000).optional(),
  CHANGE_LOG_PREPARED: bool.optional(),
  AUDIT_MAX_AGE_MS: int(60_000, 100 * 365 * 24 * 3600 * 1000).optional(),
  SQLITE_CHECKPOINT_MS: int(0, 3_600_000).optional(),
  BACKGROUND_THREAD_NICE: int(0, 19).default('19'),
  SQLITE_CHECKPOINT_NICE: int(0, 19).default('0'),
  NATIVE_WRITES: bool.default('true'),
  LOG_LEVEL: z.enum(['error', 'warn', 'log', 'debug', 'verbose']).default('log'),
});

export interface AppConfig {
  env: 'development' | 'production' | 'test';
  port: number;
  host: string;
  /** which HTTP server Nest runs on (the library works on both) */
  httpAdapter: 'express' | 'fastify';
  dataDir: string;
  databaseUrl?: string;
  redisUrl?: string;
  jwt: {
    secret?: string;
    publicKey?: string;
    privateKey?: string;
    issuer?: string;
    audience?: string;
    ttlSeconds: number;
  };
  demoUsers: boolean;
  /** seed a demo board into an empty database */
  demoData: boolean;
  heartbeatIntervalMs: number;
  /** prom-client's event-loop delay sampling interval (RealtimeModuleOptions.metrics) */
  eventLoopResolutionMs: number;
  limits: {
    maxConnectionsPerUser?: number;
    maxSubscriptionsPerConnection?: number;
    connectionsPerIpPerMinute?: number;
    messagesPerSecond?: number;
    messageBurst?: number;
    maxBufferedBytes?: number;
  };
  changeLog: { maxAgeMs?: number; maxRows?: number; preparedStatements?: boolean };
  /** audit entries older than this are deleted (unset: all kept) */
  auditMaxAgeMs?: number;
  /**
   * SQLite: WAL checkpoints in a worker that looks every this many ms (unset: the library's
   * default, 500); 0: SQLite's in-line ones
   */
  sqliteCheckpointMs?: number;
  /** nice value of V8's helper threads (Linux) */
  backgroundThreadNice: number;
  /** nice value of the SQLite checkpoint worker (Linux) */
  sqliteCheckpointNice: number;
  /** fan-out through the native frame writer when it is built (RealtimeModuleOptions) */
  nativeWrites: boolean;
  logLevel: string;
}

/** Thrown with a message that names the variable to fix. */
export class ConfigError extends Error {}

/**
 * Reads and validates the environment. Without a JWT key, development generates a secret
 * once and keeps it in the data folder (so tokens survive restarts); production refuses.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const parsed = EnvSchema.safeParse(
    Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== '')),
  );
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const dataDir = resolve(e.DATA_DIR);
  let secret = e.JWT_SECRET;
  if (!secret && !e.JWT_PUBLIC_KEY) {
    if (e.NODE_ENV === 'production') {
      throw new ConfigError(
        'JWT_SECRET (HS256) or JWT_PUBLIC_KEY (RS256) must be set when NODE_ENV=production',
      );
    }
    secret = developmentSecret(dataDir);
  }
  return {
    env: e.NODE_ENV,
    port: e.PORT,
    host: e.HOST,
    httpAdapter: e.HTTP_ADAPTER,
    dataDir,
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    jwt: {
      secret: e.JWT_PUBLIC_KEY ? undefined : secret,
      publicKey: e.JWT_PUBLIC_KEY,
      privateKey: e.JWT_PRIVATE_KEY,
      issuer: e.JWT_ISSUER,
      audience: e.JWT_AUDIENCE,
      ttlSeconds: e.JWT_TTL_SECONDS,
    },
    demoUsers: e.DEMO_USERS ?? e.NODE_ENV !== 'production',
    demoData: e.DEMO_DATA ?? (e.NODE_ENV === 'development' && (e.DEMO_USERS ?? true)),
    heartbeatIntervalMs: e.HEARTBEAT_INTERVAL_MS,
    eventLoopResolutionMs: e.METRICS_EVENT_LOOP_RESOLUTION_MS,
    limits: {
      maxConnectionsPerUser: e.MAX_CONNECTIONS_PER_USER,
      maxSubscriptionsPerConnection: e.MAX_SUBSCRIPTIONS_PER_CONNECTION,
      connectionsPerIpPerMinute: e.CONNECTIONS_PER_IP_PER_MINUTE,
      messagesPerSecond: e.MESSAGES_PER_SECOND,
      messageBurst: e.MESSAGE_BURST,
      maxBufferedBytes: e.MAX_BUFFERED_BYTES,
    },
    changeLog: {
      maxAgeMs: e.CHANGE_LOG_MAX_AGE_MS,
      maxRows: e.CHANGE_LOG_MAX_ROWS,
      preparedStatements: e.CHANGE_LOG_PREPARED,
    },
    auditMaxAgeMs: e.AUDIT_MAX_AGE_MS,
    sqliteCheckpointMs: e.SQLITE_CHECKPOINT_MS,
    backgroundThreadNice: e.BACKGROUND_THREAD_NICE,
    sqliteCheckpointNice: e.SQLITE_CHECKPOINT_NICE,
    nativeWrites: e.NATIVE_WRITES,
    logLevel: e.LOG_LEVEL,
  };
}

function developmentSecret(dataDir: string): string {
  const file = join(dataDir, 'jwt-secret');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dataDir, { recursive: true });
  const secret = randomBytes(32).toString('hex');
  writeFileSync(file, secret, { mode: 0o600 });
  new Logger('Config').warn(
    `JWT_SECRET is not set: generated a development secret in ${file}. Set JWT_SECRET (or JWT_PUBLIC_KEY) in production.`,
  );
  return secret;
}

export const APP_CONFIG = Symbol('APP_CONFIG');
