/**
 * Ours: the real sample app (src/main.ts) with the realtime library, on a fresh SQLite
 * database, written against PROTOCOL.md.
 *
 * - Compiled by the bench with tsc into bench/results/.app and run with node (see
 *   chooseLaunch for BENCH_OURS_BUILD=dist|ts-node); how it ran is noted in the report.
 * - Env: PORT, DATA_DIR (fresh temp dir), DEMO_USERS=true, JWT_SECRET (random),
 *   NODE_ENV=production, LOG_LEVEL=warn, the limits in LIMIT_ENV raised, and anything in
 *   BENCH_OURS_ENV (`KEY=value,KEY=value`; `HTTP_ADAPTER=express` runs the app on Express
 *   instead of its default, Fastify). DATABASE_URL and REDIS_URL are removed. The report
 *   notes which adapter ran.
 * - Ready when `GET /health` answers 200.
 * - Subscribers: `ws://…/realtime/ws?access_token=<HS256 JWT>` (sub `bench-user-<i>`, roles
 *   ['manager'], attrs {department:'eng'}), then `subscribe` {collection:'tasks'}.
 * - Publisher (admin JWT signed here): `POST /api/projects`, one `POST /api/tasks` per
 *   change to come (before the subscribers connect), then per change one
 *   `PATCH /api/tasks/:id` {title, version} whose title carries the marker. The latency
 *   start is the publisher's clock just before it sends the PATCH, so a figure includes
 *   the HTTP request, the transaction and the commit, not only the delivery.
 * - Memory: RSS from /proc/<pid>/status, heap from `GET /metrics`
 *   (nodejs_heap_size_used_bytes, admin token), after `gc(); gc()` evaluated through the V8
 *   inspector: the app runs with --expose-gc and --inspect on a loopback port
 *   (BENCH_OURS_GC=0 turns both off), and its GC is the peers' own (see collectGarbage).
 *   BENCH_OURS_NODE_ARGS adds node flags (e.g. `--cpu-prof --cpu-prof-dir=bench/results/prof`)
 *   after the `node` flags of package.json's start script (startFlags), which it always gets.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sign } from 'jsonwebtoken';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config/app.config';
import { marker } from '../lib/common';
import { rssBytes, threadNices } from '../lib/proc';
import {
  freePort,
  http,
  ManagedProcess,
  patchTitle,
  runToCompletion,
  waitUntil,
} from '../lib/process';
import type { MemorySample, RunningTarget, SuiteContext, Target } from '../lib/target';

/**
 * Limits raised so that the bench measures delivery, not the limiter (names from
 * src/config/app.config.ts). Subscribers also use distinct `sub`s, so the per-user limit
 * would not apply anyway; all of them come from 127.0.0.1, so the per-IP one would.
 */
export const LIMIT_ENV: Record<string, string> = {
  CONNECTIONS_PER_IP_PER_MINUTE: '10000000',
  MAX_CONNECTIONS_PER_USER: '1000000',
};

interface Launch {
  args: string[];
  env: Record<string, string>;
  note: string;
}

let launch: Launch | null = null;

/**
 * How to start the app, decided once per suite. BENCH_OURS_BUILD:
 * - `build` (default): compile with `tsc -p tsconfig.build.json` into bench/results/.app
 *   (a few seconds; never touches dist/, which other work may be rebuilding meanwhile) and
 *   run that, the `@app/*` aliases resolved by tsconfig-paths;
 * - `dist`: run dist/src/main.js as `npm run build` left it;
 * - `ts-node`: run src/main.ts under ts-node (also the fallback when the build fails).
 */
async function chooseLaunch(ctx: SuiteContext): Promise<Launch> {
  if (launch) return launch;
  const mode = process.env.BENCH_OURS_BUILD ?? 'build';
  const tsNode: Launch = {
    args: ['-r', 'ts-node/register/transpile-only', '-r', 'tsconfig-paths/register', 'src/main.ts'],
    env: {},
    note: 'ran under ts-node (transpile-only) on src/main.ts',
  };
  if (mode === 'ts-node') return (launch = tsNode);
  if (mode === 'dist') {
    const main = join(ctx.root, 'dist/src/main.js');
    if (!existsSync(main))
      throw new Error('BENCH_OURS_BUILD=dist but dist/src/main.js does not exist');
    return (launch = { args: [main], env: {}, note: 'ran as node dist/src/main.js' });
  }
  const outDir = join(ctx.root, 'bench/results/.app');
  rmSync(outDir, { recursive: true, force: true });
  ctx.log('ours: compiling the app (tsc -p tsconfig.build.json) into bench/results/.app');
  const build = await runToCompletion(
    process.execPath,
    [
      require.resolve('typescript/bin/tsc'),
      '-p',
      'tsconfig.build.json',
      '--outDir',
      outDir,
      '--incremental',
      'false',
      '--sourceMap',
      'false',
    ],
    { cwd: ctx.root, timeoutMs: 120_000 },
  );
  const main = join(outDir, 'src/main.js');
  if (!build.timedOut && existsSync(main)) {
    const errors = build.code === 0 ? '' : ' (tsc reported type errors; the emitted JS ran)';
    return (launch = {
      args: ['-r', 'tsconfig-paths/register', main],
      env: { TS_NODE_BASEURL: outDir, TS_NODE_PROJECT: join(ctx.root, 'tsconfig.json') },
      note: `ran compiled (tsc → bench/results/.app, ${Math.round(build.elapsedMs / 1000)} s)${errors}`,
    });
  }
  const tail = build.output.trim().split('\n').slice(-3).join(' | ');
  return (launch = { ...tsNode, note: `${tsNode.note}: the tsc build failed (${tail})` });
}

/**
 * The `node` flags of `npm start` (package.json: `node <flags> dist/src/main.js`): ours runs
 * with them, as it is started in production (`--no-memory-reducer`: README, "Using the
 * library in your own Nest app", step 7).
 */
export function startFlags(root: string): string[] {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    scripts?: Record<string, string>;
  };
  const m = /^node((?:\s+--\S+)*)\s/.exec(pkg.scripts?.start ?? '');
  return m ? m[1].trim().split(/\s+/).filter(Boolean) : [];
}

/** BENCH_OURS_ENV=`KEY=value,KEY=value` → object. */
function extraEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (process.env.BENCH_OURS_ENV ?? '').split(',')) {
    const eq = pair.indexOf('=');
    if (eq > 0) out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return out;
}

/**
 * The HTTP adapter the app runs on, as the app's own config loader reads `env` (and so its
 * default when HTTP_ADAPTER is unset).
 */
function httpAdapterOf(env: Record<string, string>): string {
  try {
    const adapter = loadConfig(env).httpAdapter;
    return env.HTTP_ADAPTER ? adapter : `${adapter} (the app's default)`;
  } catch (e) {
    return `unknown: ${(e as Error).message.split('\n').join(' ')}`;
  }
}

/**
 * Limit-like environment variables that the server's sources mention but the bench does
 * not set: worth a look when ours is throttled.
 */
function unsetLimitVars(root: string, env: Record<string, string>): string[] {
  const names = new Set<string>();
  for (const dir of ['src', 'libs/realtime/src']) {
    const abs = join(root, dir);
    if (!existsSync(abs)) continue;
    for (const entry of readdirSync(abs, { withFileTypes: true, recursive: true })) {
      if (!entry.isFile() || !entry.name.endsWith('.ts') || entry.name.endsWith('.spec.ts'))
        continue;
      const text = readFileSync(join(entry.parentPath, entry.name), 'utf8');
      const re =
        /(?:process\.env\.|get(?:OrThrow)?(?:<[^>]*>)?\(\s*['"]|^\s*)([A-Z][A-Z0-9_]{3,})\b/gm;
      for (const m of text.matchAll(re)) {
        if (/LIMIT|RATE|THROTTLE|_PER_|MAX_CONN|BUFFER/.test(m[1]) && !(m[1] in env))
          names.add(m[1]);
      }
    }
  }
  return [...names].sort();
}

/**
 * A full GC in the app: `gc(); gc()` (--expose-gc) evaluated through the V8 inspector, the
 * same collection the peers run for their memory samples (memoryReport), rather than
 * `HeapProfiler.collectGarbage`: that is V8's low-memory notification, whose
 * memory-reducing collections also flush compiled code, so ours met the scenarios with
 * less of its request path optimized than a `gc()` leaves (bench/README.md, Memory).
 */
async function collectGarbage(inspectPort: number): Promise<boolean> {
  const list = await http('GET', `http://127.0.0.1:${inspectPort}/json/list`);
  const url = (JSON.parse(list.body) as { webSocketDebuggerUrl?: string }[])[0]
    ?.webSocketDebuggerUrl;
  if (!url) return false;
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.terminate();
      resolve(false);
    }, 15_000);
    ws.on('open', () =>
      ws.send(
        JSON.stringify({ id: 1, method: 'Runtime.evaluate', params: { expression: 'gc(); gc()' } }),
      ),
    );
    ws.on('message', (data: Buffer) => {
      const reply = JSON.parse(data.toString()) as {
        id?: number;
        error?: unknown;
        result?: { exceptionDetails?: unknown };
      };
      if (reply.id !== 1) return;
      clearTimeout(timer);
      ws.close();
      resolve(!reply.error && !reply.result?.exceptionDetails);
    });
    ws.on('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

export const oursTarget: Target = {
  name: 'ours',
  label: 'ours (nest-realtime)',

  async check(ctx: SuiteContext): Promise<string | null> {
    if (!existsSync(join(ctx.root, 'src/main.ts'))) {
      return 'src/main.ts does not exist yet (the server is being written)';
    }
    return null;
  },

  async start(ctx: SuiteContext): Promise<RunningTarget> {
    const how = await chooseLaunch(ctx);
    const port = await freePort();
    const gc = process.env.BENCH_OURS_GC !== '0';
    const inspectPort = gc ? await freePort() : 0;
    const dataDir = mkdtempSync(join(tmpdir(), 'bench-ours-'));
    const secret = randomBytes(32).toString('hex');
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      ...LIMIT_ENV,
      ...how.env,
      ...extraEnv(),
      PORT: String(port),
      DATA_DIR: dataDir,
      DEMO_USERS: 'true',
      JWT_SECRET: secret,
    };
    delete env.DATABASE_URL;
    delete env.REDIS_URL;
    // BENCH_OURS_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=bench/results/prof" to profile
    const extraArgs = (process.env.BENCH_OURS_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const started = startFlags(ctx.root);
    const nodeArgs = [
      ...(gc ? ['--expose-gc', `--inspect=127.0.0.1:${inspectPort}`] : []),
      ...started,
      ...extraArgs,
      ...how.args,
    ];
    const proc = ManagedProcess.start('ours', process.execPath, nodeArgs, { cwd: ctx.root, env });
    const base = `http://127.0.0.1:${port}`;
    const cleanup = async (): Promise<void> => {
      await proc.stop(10_000);
      rmSync(dataDir, { recursive: true, force: true });
    };
    const up = await waitUntil(
      async () => (await http('GET', `${base}/health`, { timeoutMs: 2000 })).status === 200,
      120_000,
      () => proc.running,
      500,
    );
    if (!up) {
      const state = proc.running ? 'no 200 from GET /health within 120 s' : 'the process exited';
      await cleanup();
      throw new Error(`the app did not start (${how.note}; ${state}):\n${proc.output()}`);
    }

    const exp = Math.floor(Date.now() / 1000) + 4 * 3600;
    const adminToken = sign(
      { sub: 'bench-admin', roles: ['admin'], attrs: { department: 'eng' }, exp },
      secret,
      { algorithm: 'HS256' },
    );
    const headers = { authorization: `Bearer ${adminToken}` };
    const api = async (method: string, path: string, body: unknown, want: number): Promise<any> => {
      const res = await http(method, `${base}${path}`, { body: JSON.stringify(body), headers });
      if (res.status !== want) {
        throw new Error(
          `${method} ${path}: HTTP ${res.status} (want ${want}) ${res.body.slice(0, 300)}`,
        );
      }
      return JSON.parse(res.body);
    };
    const tasks: { id: string; version: number }[] = [];
    const notes = [how.note];
    notes.push(`HTTP adapter: ${httpAdapterOf(env)}`);
    notes.push(
      started.length > 0
        ? `node flags of npm start: ${started.join(' ')}`
        : 'npm start passes no node flags',
    );
    // the server warns at start when the addon is missing (LOG_LEVEL=warn keeps warnings)
    notes.push(
      ['false', '0', 'no', 'off'].includes(env.NATIVE_WRITES ?? '')
        ? 'fan-out writes: one fs.writeSync per socket (NATIVE_WRITES=false)'
        : /native frame writer not built or not loaded/.test(proc.output())
          ? 'fan-out writes: one fs.writeSync per socket (the native frame writer is not built or did not load)'
          : 'fan-out writes: the native frame writer (one call per batch of sockets)',
    );
    // V8's helper threads yield the core (BACKGROUND_THREAD_NICE; the checkpoint worker only
    // with SQLITE_CHECKPOINT_NICE)
    const nices = threadNices(proc.pid);
    const lowered = nices.filter((v) => v > 0);
    notes.push(
      `threads at a nice value above 0: ${lowered.length} of ${nices.length}` +
        (lowered.length > 0 ? ` (${[...new Set(lowered)].join(', ')})` : ''),
    );
    const unset = unsetLimitVars(ctx.root, env);
    if (unset.length > 0) {
      notes.push(
        `limit-like env vars the server reads but the bench leaves unset: ${unset.join(', ')}`,
      );
    }

    return {
      pid: proc.pid,
      base,
      notes,
      client: {
        kind: 'protocol',
        url: `ws://127.0.0.1:${port}/realtime/ws`,
        jwt: { secret, claims: { roles: ['manager'], attrs: { department: 'eng' } } },
        subscribe: { type: 'subscribe', id: '1', data: { query: { collection: 'tasks' } } },
      },
      async prepare(changes) {
        const project = (await api(
          'POST',
          '/api/projects',
          { name: 'bench', department: 'eng' },
          201,
        )) as {
          id: string;
        };
        const dueAt = new Date(Date.now() + 30 * 86_400_000).toISOString();
        while (tasks.length < changes) {
          const task = (await api(
            'POST',
            '/api/tasks',
            {
              projectId: project.id,
              title: `bench task ${tasks.length}`,
              status: 'todo',
              priority: 3,
              assigneeId: 'bench-user-0',
              department: 'eng',
              budget: 1000,
              tags: ['bench'],
              dueAt,
            },
            201,
          )) as { id: string; version: number };
          tasks.push({ id: task.id, version: task.version });
        }
      },
      async publish(seq) {
        // One task per change, so that the version is known and a frame never carries an
        // older marker (e.g. in a `before` image) for the same task.
        const task = tasks[seq];
        if (!task) throw new Error(`change ${seq} was not prepared`);
        // a change whose PATCH got no answer is looked up before it is sent again
        task.version = await patchTitle(
          `${base}/api/tasks/${task.id}`,
          `bench ${marker(seq)}`,
          task.version,
          headers,
        );
      },
      async memory(): Promise<MemorySample> {
        const afterGc = gc ? await collectGarbage(inspectPort).catch(() => false) : false;
        let heapUsedBytes: number | null = null;
        try {
          const res = await http('GET', `${base}/metrics`, { headers });
          const m = /^nodejs_heap_size_used_bytes(?:\{[^}]*\})? ([0-9.e+]+)/m.exec(res.body);
          if (res.status === 200 && m) heapUsedBytes = Number(m[1]);
        } catch {
          // no metrics: RSS only
        }
        return { rssBytes: rssBytes(proc.pid), heapUsedBytes, afterGc };
      },
      alive: () => proc.running,
      output: () => proc.output(),
      stop: cleanup,
    };
  },
};
