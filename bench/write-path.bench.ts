/**
 * Write path: committed writes/s through the whole pipeline (change capture, change log
 * row in the same transaction, PostgreSQL seq lock, publish after commit, routing to a live
 * subscription) against the bare ORM doing the same write (load, modify, save in a
 * transaction) with no capture, on SQLite and PostgreSQL. Prints figures; asserts nothing.
 *
 *   node -r ts-node/register/transpile-only -r tsconfig-paths/register bench/write-path.bench.ts
 *
 * Env: WRITE_BENCH_MS (per side, default 3000, in 6 alternating rounds), WRITE_BENCH_PG (PostgreSQL admin URL,
 * default postgres://postgres@127.0.0.1:5432/postgres; set to "off" to skip), WRITE_BENCH_SQLITE
 * ("off" to skip).
 */
import 'reflect-metadata';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { DataSource, Repository } from 'typeorm';
import { EntityWriter, SubscriptionsService, TransactionRunner } from '@app/realtime';
import type { SubscriptionSink } from '@app/realtime';
import { createApp } from '../src/app.factory';
import { loadConfig } from '../src/config/app.config';
import { prepareSqlite } from '../src/database/database.options';
import { Project } from '../src/projects/project.entity';
import { Task } from '../src/tasks/task.entity';
import { commandCpuMs } from './lib/proc';
import { ratioAgainst } from './lib/report';

const MS = Number(process.env.WRITE_BENCH_MS ?? 3000);
/** the target: at least this fraction of the bare ORM's rate */
const writeRatio = (x: number): string => ratioAgainst(x, 0.7);
const ROUNDS = 6;
const PG_ADMIN = process.env.WRITE_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const SQLITE = process.env.WRITE_BENCH_SQLITE !== 'off';

/** CPU per committed write, µs: this process, and (PostgreSQL) the database's processes */
interface Cpu {
  node: number;
  pg?: number;
}

interface Row {
  db: string;
  writers: number;
  bare: number;
  pipeline: number;
  cpu: { bare: Cpu; pipeline: Cpu; variant?: Cpu; writer?: Cpu };
  /**
   * The pipeline's variant: SQLite with SQLite's own in-line checkpoints
   * (SQLITE_CHECKPOINT_MS=0); PostgreSQL without the prepared log INSERT
   * (CHANGE_LOG_PREPARED=false)
   */
  variant?: number;
  /** the pipeline writing through EntityWriter (findOne + update) instead of findOne + save */
  writer?: number;
}

async function freshPg(): Promise<{ url: string; drop: () => Promise<void> } | null> {
  if (PG_ADMIN === 'off') return null;
  const name = `rt_bench_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new Client({ connectionString: PG_ADMIN });
  try {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
  } catch (e) {
    console.log(`PostgreSQL unavailable (${(e as Error).message}): skipping it`);
    return null;
  } finally {
    await admin.end().catch(() => undefined);
  }
  const url = PG_ADMIN.replace(/\/[^/]*$/, `/${name}`);
  return {
    url,
    drop: async () => {
      const c = new Client({ connectionString: PG_ADMIN });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/** A side of the comparison, set up and ready: `write(w)` is writer w's next write. */
interface Side {
  write: (w: number) => Promise<void>;
  close: () => Promise<void>;
}

const yieldTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Runs `writers` loops of `write` for `ms`; returns the writes committed. Each writer
 * yields to the event loop after each write, as a server does between requests, so that
 * what runs after commit (the pipeline's dispatch) is inside the measurement.
 */
async function count(side: Side, writers: number, ms: number): Promise<number> {
  const end = Date.now() + ms;
  let n = 0;
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      while (Date.now() < end) {
        await side.write(w);
        n++;
        await yieldTurn();
      }
    }),
  );
  return n;
}

/**
 * All sides in the same process, measured in alternating rounds (this machine's speed
 * drifts by 10–20 % over seconds; alternating puts every side under the same drift).
 * Returns committed writes/s of each side, and its CPU per write (PostgreSQL's processes
 * too when `pg`: nothing else is expected to use that server meanwhile).
 */
async function compare(
  sides: Side[],
  writers: number,
  pg = false,
): Promise<{ rate: number; cpu: Cpu }[]> {
  const round = MS / ROUNDS;
  for (const side of sides) await count(side, writers, 200); // warm-up
  const totals = sides.map(() => ({ n: 0, nodeMs: 0, pgMs: 0 }));
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < sides.length; i++) {
      const cpu0 = process.cpuUsage();
      const pg0 = pg ? commandCpuMs('postgres') : 0;
      totals[i].n += await count(sides[i], writers, round);
      const cpu = process.cpuUsage(cpu0);
      totals[i].nodeMs += (cpu.user + cpu.system) / 1000;
      if (pg) totals[i].pgMs += commandCpuMs('postgres') - pg0;
    }
  }
  return totals.map((t) => ({
    rate: (t.n * 1000) / MS,
    cpu: {
      node: (t.nodeMs * 1000) / t.n,
      ...(pg ? { pg: (t.pgMs * 1000) / t.n } : {}),
    },
  }));
}

const us = (v: number | undefined) => (v === undefined ? '–' : `${v.toFixed(0)}`);

async function seed(
  repo: Repository<Task>,
  projects: Repository<Project>,
  n: number,
): Promise<string[]> {
  const p = await projects.save(
    projects.create({ name: 'bench', ownerId: 'bench', department: 'eng' }),
  );
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const t = await repo.save(
      repo.create({
        projectId: p.id,
        title: `t${i}`,
        ownerId: 'bench',
        department: 'eng',
        tags: [],
      }),
    );
    ids.push(t.id);
  }
  return ids;
}

/** every write must change the row: a title equal to the stored one makes save() a no-op */
let written = 0;
const update = async (manager: DataSource['manager'], id: string, i: number) => {
  const repo = manager.getRepository(Task);
  const task = await repo.findOneByOrFail({ id });
  task.title = `w${i}-${++written}`;
  await repo.save(task);
};

async function bare(
  options: ConstructorParameters<typeof DataSource>[0],
  writers: number,
): Promise<Side> {
  const ds = await new DataSource({ ...options, entities: [Project, Task] } as never).initialize();
  const ids = await seed(ds.getRepository(Task), ds.getRepository(Project), writers);
  // SQLite shares one connection: its writers must take turns, like TransactionRunner does
  let tail: Promise<unknown> = Promise.resolve();
  const serial = options.type === 'better-sqlite3';
  return {
    write: (w) => {
      const run = () => ds.transaction((m) => update(m, ids[w], w));
      if (!serial) return run();
      const next = tail.then(run);
      tail = next.catch(() => undefined);
      return next;
    },
    close: () => ds.destroy(),
  };
}

/** The same write through EntityWriter: one SELECT and one UPDATE, no save() */
const writerUpdate = async (
  writer: EntityWriter,
  manager: DataSource['manager'],
  id: string,
  i: number,
) => {
  const task = (await writer.findOne(manager, Task, id, { lock: true })) as Task;
  await writer.update(manager, task, { title: `w${i}-${++written}` });
};

async function pipeline(
  env: Record<string, string>,
  writers: number,
  how: 'save' | 'writer' = 'save',
): Promise<Side> {
  const app = await createApp(
    loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'error', JWT_SECRET: 'x'.repeat(32), ...env }),
  );
  await app.init();
  const ds = app.get(DataSource);
  const ids = await seed(ds.getRepository(Task), ds.getRepository(Project), writers);
  // one live subscriber, so that routing and serialization run for every write
  let frames = 0;
  const sink: SubscriptionSink = {
    id: 'bench',
    transport: 'test',
    principal: { userId: 'bench', roles: ['admin'], attrs: {}, exp: Date.now() / 1000 + 3600 },
    ability: (await import('../src/policies/app-ability.factory')).defineAppAbility({
      userId: 'bench',
      roles: ['admin'],
      attrs: {},
      exp: 0,
    }),
    remote: { ip: null, userAgent: null },
    open: true,
    emitRaw: () => void frames++,
  };
  await app.get(SubscriptionsService).subscribe(sink, { collection: 'tasks' });
  const tx = app.get(TransactionRunner);
  const writer = app.get(EntityWriter);
  return {
    write: (w) =>
      tx.transaction((m) =>
        how === 'writer' ? writerUpdate(writer, m, ids[w], w) : update(m, ids[w], w),
      ),
    close: async () => {
      await app.close();
      // subscription_created is one frame: the changes must have added many more
      if (frames < 100)
        throw new Error('the subscriber received no changes: the pipeline did not run');
    },
  };
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  for (const writers of SQLITE ? [1, 8] : []) {
    const dir = mkdtempSync(join(tmpdir(), 'rt-wbench-'));
    const bareSide = await bare(
      {
        type: 'better-sqlite3',
        database: join(dir, 'bare.sqlite'),
        synchronize: true,
        // the app's own pragmas: the comparison is about the pipeline, not the file's set-up
        prepareDatabase: prepareSqlite,
      } as never,
      writers,
    );
    const pipelineSide = await pipeline({ DATA_DIR: join(dir, 'worker') }, writers);
    const inlineSide = await pipeline(
      { DATA_DIR: join(dir, 'inline'), SQLITE_CHECKPOINT_MS: '0' },
      writers,
    );
    const writerSide = await pipeline({ DATA_DIR: join(dir, 'writer') }, writers, 'writer');
    const sides = [bareSide, pipelineSide, inlineSide, writerSide];
    const [bs, ps, is, ws] = await compare(sides, writers);
    const [b, p, inline] = [bs.rate, ps.rate, is.rate];
    for (const side of sides) await side.close();
    rmSync(dir, { recursive: true, force: true });
    rows.push({
      db: 'sqlite',
      writers,
      bare: b,
      pipeline: p,
      variant: inline,
      writer: ws.rate,
      cpu: { bare: bs.cpu, pipeline: ps.cpu, variant: is.cpu, writer: ws.cpu },
    });
    console.log(
      `sqlite     writers=${writers}: bare ${b.toFixed(0)}/s, pipeline ${p.toFixed(0)}/s (${writeRatio(p / b)}×), in-line checkpoints ${inline.toFixed(0)}/s (${writeRatio(inline / b)}×), EntityWriter ${ws.rate.toFixed(0)}/s (${writeRatio(ws.rate / b)}×)`,
    );
  }
  for (const writers of [1, 8]) {
    // every database made is dropped again, whatever fails after it
    const made: { url: string; drop: () => Promise<void> }[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const db = await freshPg();
        if (!db) break;
        made.push(db);
      }
      if (made.length < 4) break;
      const [a, c, d, e] = made.map((db) => db.url);
      const { Init1764400000000 } = await import('../src/database/migrations/1764400000000-Init');
      const bareSide = await bare(
        {
          type: 'postgres',
          url: a,
          migrations: [Init1764400000000],
          migrationsRun: true,
        } as never,
        writers,
      );
      const pipelineSide = await pipeline({ DATABASE_URL: c }, writers);
      const unprepared = await pipeline({ DATABASE_URL: d, CHANGE_LOG_PREPARED: 'false' }, writers);
      const writerSide = await pipeline({ DATABASE_URL: e }, writers, 'writer');
      const sides = [bareSide, pipelineSide, unprepared, writerSide];
      const [bs, ps, vs, ws] = await compare(sides, writers, true);
      const [b, p, u] = [bs.rate, ps.rate, vs.rate];
      for (const side of sides) await side.close();
      rows.push({
        db: 'postgres',
        writers,
        bare: b,
        pipeline: p,
        variant: u,
        writer: ws.rate,
        cpu: { bare: bs.cpu, pipeline: ps.cpu, variant: vs.cpu, writer: ws.cpu },
      });
      console.log(
        `postgres   writers=${writers}: bare ${b.toFixed(0)}/s, pipeline ${p.toFixed(0)}/s (${writeRatio(p / b)}×), log INSERT not prepared ${u.toFixed(0)}/s (${writeRatio(u / b)}×), EntityWriter ${ws.rate.toFixed(0)}/s (${writeRatio(ws.rate / b)}×)`,
      );
    } finally {
      for (const db of made) {
        await db
          .drop()
          .catch((e: Error) => console.log(`could not drop a bench database: ${e.message}`));
      }
    }
  }
  console.log('\nwrite path: committed writes/s (load + modify + save in a transaction)');
  console.log(
    '| database | writers | bare ORM | whole pipeline | ratio | variant: SQLite in-line checkpoints, PostgreSQL log INSERT not prepared | ratio | pipeline through EntityWriter | ratio |',
  );
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    const variant =
      r.variant === undefined
        ? '– | –'
        : `${r.variant.toFixed(0)} | ${writeRatio(r.variant / r.bare)}×`;
    const writer =
      r.writer === undefined
        ? '– | –'
        : `${r.writer.toFixed(0)} | ${writeRatio(r.writer / r.bare)}×`;
    console.log(
      `| ${r.db} | ${r.writers} | ${r.bare.toFixed(0)} | ${r.pipeline.toFixed(0)} | ${writeRatio(r.pipeline / r.bare)}× | ${variant} | ${writer} |`,
    );
  }
  console.log('\nCPU per committed write, µs: this process (both sides run in it), PostgreSQL');
  console.log(
    '| database | writers | bare: node | pipeline: node | variant: node | EntityWriter: node | bare: PostgreSQL | pipeline: PostgreSQL | variant: PostgreSQL | EntityWriter: PostgreSQL |',
  );
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    const { bare: b, pipeline: p, variant: v, writer: w } = r.cpu;
    console.log(
      `| ${r.db} | ${r.writers} | ${us(b.node)} | ${us(p.node)} | ${us(v?.node)} | ${us(w?.node)} | ${us(b.pg)} | ${us(p.pg)} | ${us(v?.pg)} | ${us(w?.pg)} |`,
    );
  }
  console.log(`WRITE_PATH_JSON ${JSON.stringify(rows)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
