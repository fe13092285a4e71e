import type { AnyAbility } from '@casl/ability';
import type { CustomFilterFn } from './subscriptions/filter-compiler';
import type { Principal } from './realtime.types';

/** One TypeORM entity exposed to subscribers under a collection name. */
export interface CollectionRegistration {
  /** the name clients use in `query.collection` and CASL subject type, e.g. `tasks` */
  name: string;
  /** the TypeORM entity class */
  entity: new (...args: any[]) => object;
}

/** Builds the CASL ability of a user. Subjects are collection names (`tasks`), plus
 * `audit_logs` (read: the audit log API) and `metrics` (read: `/metrics`). */
export type AbilityFactory = (principal: Principal) => AnyAbility;

export interface RealtimeAuthOptions {
  /** HS256 shared secret */
  secret?: string;
  /** RS256 public key (PEM) */
  publicKey?: string;
  /** RS256 private key (PEM), only needed to sign tokens (demo login) */
  privateKey?: string;
  issuer?: string;
  audience?: string;
  /** lifetime of tokens that the app signs with `TokenService.sign` @default 3600 */
  tokenTtlSeconds?: number;
}

export interface RealtimeLimits {
  /** @default 20 */
  maxFilters: number;
  /** @default 1000 */
  maxInValues: number;
  /** @default 1000 */
  maxBatchSize: number;
  /** @default 60000 */
  maxThrottleMs: number;
  /** @default 100 */
  maxSubscriptionsPerConnection: number;
  /** @default 20 */
  maxConnectionsPerUser: number;
  /** largest accepted WebSocket frame in bytes @default 65536 */
  maxFrameBytes: number;
  /** token bucket: sustained client messages per second @default 50 */
  messagesPerSecond: number;
  /** token bucket size @default 100 */
  messageBurst: number;
  /** rate-limited messages in a row before the socket is closed 4008 @default 50 */
  rateLimitStrikes: number;
  /** unsent bytes per connection before it is dropped as a slow consumer @default 4 MiB */
  maxBufferedBytes: number;
  /** connection attempts per IP per minute (WebSocket upgrade and SSE) @default 600 */
  connectionsPerIpPerMinute: number;
}

export interface ChangeLogOptions {
  /** keep changes at most this long @default 24 h */
  maxAgeMs?: number;
  /** keep at most this many changes @default 1 000 000 */
  maxRows?: number;
  /** how often retention runs @default 60 000 */
  pruneIntervalMs?: number;
  /**
   * PostgreSQL: write log rows through a server-side prepared statement (`PREPARE` once
   * per connection, then `EXECUTE …; COMMIT` in one message), which costs the database
   * less CPU per write than planning the INSERT each time. Set `false` behind a pooler
   * that runs one client's transactions on different server connections (PgBouncer in
   * transaction or statement mode), where a session's prepared statement may be missing.
   * @default true
   */
  preparedStatements?: boolean;
}

export interface RealtimeModuleOptions {
  auth: RealtimeAuthOptions;
  collections: CollectionRegistration[];
  /** custom filters by name, usable as `{"type":"custom","name":…}` */
  customFilters?: Record<string, CustomFilterFn>;
  abilityFactory: AbilityFactory;
  changeLog?: ChangeLogOptions;
  limits?: Partial<RealtimeLimits>;
  /** @default '/realtime' */
  pathPrefix?: string;
  /**
   * How often each connection gets a heartbeat (WebSocket ping, SSE `heartbeat` event); the
   * connections' heartbeats are spread over the interval, not sent all at once.
   * @default 30000
   */
  heartbeatIntervalMs?: number;
  /**
   * How often the event loop's delay is sampled for `nodejs_eventloop_lag_*`, in ms. Each
   * sample wakes the thread, and on a VM a wake-up costs tens of µs: at 10 (prom-client's
   * default) an idle server here used 7–8 ms of CPU a second, at 100 about 2. The figures
   * are how late a due sample ran (the interval minus this resolution), so they read about
   * 0 while the loop keeps up at any resolution; a finer one only takes more samples.
   * @default 100
   */
  metrics?: { eventLoopResolutionMs?: number };
  /**
   * Hand fan-out frames to the kernel through the native frame writer
   * (native/frame-writer, built by `npm install` when a C compiler is there): one native
   * call writes a change to every idle WebSocket, instead of one `fs.writeSync` per socket.
   * Without the addon, or with `false`, the portable path runs; the frames are the same.
   * @default true
   */
  nativeWrites?: boolean;
  /** publish committed changes on Redis pub/sub so that every node delivers them */
  redisUrl?: string;
  /**
   * Wrap every HTTP request in a RequestContext, so that writes made anywhere while it
   * runs record the authenticated user as actor without naming it. Costs every promise of
   * the process some speed on Node 20 (AsyncLocalStorage); without it, pass
   * `{ actor }` to TransactionRunner.transaction or `{ data: { actorId } }` to save().
   * @default false
   */
  requestContext?: boolean;
  /**
   * better-sqlite3 in WAL mode: WAL checkpoints (copy and fsync) run in a worker thread,
   * which looks every `intervalMs` (once a second after a quiet second with nothing to
   * copy), instead of inside a COMMIT on the event loop (SqliteCheckpointer). `false`:
   * SQLite's own in-line checkpoints. Ignored elsewhere.
   * @default { intervalMs: 500, nice: 0 }
   */
  sqliteCheckpoint?:
    | false
    | {
        intervalMs?: number;
        /**
         * The worker thread's nice value (Linux: 0 to 19; 0 leaves it at the process's): at
         * 19 it takes the core only when the event loop does not want it, and under a heavy
         * writer on one busy core it may then fall behind.
         * @default 0
         */
        nice?: number;
      };
  audit?: {
    /** how long a recorded entry may wait for its batch (no timer runs while none waits) @default 1000 */
    flushIntervalMs?: number;
    /** @default 500 */
    maxBatch?: number;
    /**
     * Entries older than this are deleted (every `pruneIntervalMs`). Unset: the audit log is
     * kept whole; how long to keep it is the operator's decision (compliance), not ours.
     */
    maxAgeMs?: number;
    /** how often the retention runs, when `maxAgeMs` is set @default 3_600_000 */
    pruneIntervalMs?: number;
  };
}

export const DEFAULT_LIMITS: RealtimeLimits = {
  maxFilters: 20,
  maxInValues: 1000,
  maxBatchSize: 1000,
  maxThrottleMs: 60000,
  maxSubscriptionsPerConnection: 100,
  maxConnectionsPerUser: 20,
  maxFrameBytes: 64 * 1024,
  messagesPerSecond: 50,
  messageBurst: 100,
  rateLimitStrikes: 50,
  maxBufferedBytes: 4 * 1024 * 1024,
  connectionsPerIpPerMinute: 600,
};
