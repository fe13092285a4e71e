/**
 * The subscription engine in process: the sample app on SQLite, 10 000 subscriptions of the
 * `tasks` collection on in-memory sinks (no sockets), with a mix of users and abilities so
 * that per-change authorization, filters and field redaction all run; writes go through the
 * TransactionRunner (change capture, change log, feed, routing). Prints figures; asserts
 * nothing.
 *
 *   node -r ts-node/register/transpile-only -r tsconfig-paths/register bench/engine.bench.ts
 *
 * Figures: subscription creation p50 / p99 (no snapshot), committed writes/s, and
 * deliveries/s (a delivery = one change handed to one subscription), both over wall time
 * and over the time spent routing inside the engine.
 *
 * Env: ENGINE_BENCH_SUBS (default 10 000), ENGINE_BENCH_WRITES (default 2 000),
 * ENGINE_BENCH_TASKS (documents written to, default 200).
 */
import 'reflect-metadata';
import type { AnyAbility } from '@casl/ability';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  AbilityService,
  AuditService,
  ChangeRecord,
  Principal,
  SubscriptionsService,
  TransactionRunner,
} from '@app/realtime';
import type { ServerEventType, SubscriptionSink } from '@app/realtime';
import type { PreparedChange, Subscription } from '@app/realtime/subscriptions/subscription';
import { createApp } from '../src/app.factory';
import { loadConfig } from '../src/config/app.config';
import { Project } from '../src/projects/project.entity';
import { Task } from '../src/tasks/task.entity';

const SUBS = Number(process.env.ENGINE_BENCH_SUBS ?? 10_000);
const WRITES = Number(process.env.ENGINE_BENCH_WRITES ?? 2_000);
const TASKS = Number(process.env.ENGINE_BENCH_TASKS ?? 200);
const USERS = 200;
const DEPARTMENTS = ['eng', 'sales'];
const STATUSES = ['todo', 'doing', 'done'] as const;

/** A client connection without a socket: counts what the engine hands it. */
class CountingSink implements SubscriptionSink {
  readonly transport = 'test' as const;
  readonly remote = { ip: null, userAgent: null };
  readonly open = true;
  frames = 0;
  deliveries = 0;
  bytes = 0;

  constructor(
    readonly id: string,
    public principal: Principal,
    public ability: AnyAbility,
  ) {}

  emitRaw(type: ServerEventType, dataJson: string): void {
    if (type !== 'data_change') return;
    // only reached if the engine stops using emitChanges
    this.frames++;
    this.bytes += dataJson.length;
  }

  emitChanges(_subscription: Subscription, changes: readonly PreparedChange[]): void {
    this.frames++;
    this.deliveries += changes.length;
    for (const change of changes) this.bytes += change.json.length;
  }
}

/** 10% admins, 20% managers, 70% members, in two departments, over USERS user ids. */
function principalOf(i: number): Principal {
  const userId = `u${i % USERS}`;
  const department = DEPARTMENTS[i % DEPARTMENTS.length];
  const bucket = i % 10;
  const roles = bucket === 0 ? ['admin'] : bucket <= 2 ? ['manager'] : ['member'];
  return { userId, roles, attrs: { department }, exp: Math.floor(Date.now() / 1000) + 3600 };
}

/** 40% everything, then status, priority, own tasks and the custom `overdue` filter. */
function queryOf(i: number): Record<string, unknown> {
  const kind = Math.floor(i / 10) % 10;
  const filters =
    kind < 4
      ? []
      : kind < 6
        ? [{ type: 'field', field: 'status', operator: 'in', value: ['todo', 'doing'] }]
        : kind < 8
          ? [{ type: 'field', field: 'priority', operator: 'gte', value: 3 }]
          : kind < 9
            ? [{ type: 'user', field: 'assigneeId' }]
            : [{ type: 'custom', name: 'overdue' }];
  return { collection: 'tasks', filters };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'rt-engine-bench-'));
  const app = await createApp(
    loadConfig({
      NODE_ENV: 'test',
      LOG_LEVEL: 'error',
      DATA_DIR: dir,
      JWT_SECRET: 'x'.repeat(32),
      DEMO_USERS: 'false',
    }),
  );
  await app.init();
  try {
    const tx = app.get(TransactionRunner);
    const engine = app.get(SubscriptionsService);
    const abilities = app.get(AbilityService);

    // the documents written to: both departments, some assigned, some overdue
    const ids: string[] = [];
    await tx.transaction(async (m) => {
      const projects = await m
        .getRepository(Project)
        .save(
          DEPARTMENTS.map((department) =>
            m.getRepository(Project).create({ name: 'bench', ownerId: 'u0', department }),
          ),
        );
      for (let i = 0; i < TASKS; i++) {
        const department = DEPARTMENTS[i % DEPARTMENTS.length];
        const task = await m.getRepository(Task).save(
          m.getRepository(Task).create({
            projectId: projects[i % projects.length].id,
            title: `task ${i}`,
            ownerId: `u${i % USERS}`,
            assigneeId: `u${(i * 7) % USERS}`,
            department,
            budget: i * 10,
            priority: 1 + (i % 5),
            status: STATUSES[i % 3],
            tags: [],
            dueAt: new Date(Date.now() + (i % 2 ? -1 : 1) * 86_400_000),
          }),
        );
        ids.push(task.id);
      }
    });

    // subscriptions, one per sink (a client each), created one after another
    const sinks: CountingSink[] = [];
    const createMs: number[] = [];
    for (let i = 0; i < SUBS; i++) {
      const principal = principalOf(i);
      const sink = new CountingSink(`sink-${i}`, principal, abilities.forPrincipal(principal));
      sinks.push(sink);
      const started = performance.now();
      await engine.subscribe(sink, queryOf(i));
      createMs.push(performance.now() - started);
    }
    createMs.sort((a, b) => a - b);

    // the seed's changes are routed, and the audit entries of the subscriptions written,
    // before anything is measured
    const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
    await turn();
    await app.get(AuditService).flush();

    // time spent routing inside the engine
    let routingMs = 0;
    let routed = 0;
    const dispatch = engine.dispatch.bind(engine);
    engine.dispatch = (changes: ChangeRecord[]) => {
      const started = performance.now();
      dispatch(changes);
      routingMs += performance.now() - started;
      routed += changes.length;
    };

    /**
     * WRITES committed writes, one transaction each. The change feed dispatches once per
     * event-loop turn, and better-sqlite3 never yields by itself: `perTurn` writes go
     * between two turns (1: each write alone, as separate requests would; more: a burst).
     */
    const run = async (perTurn: number) => {
      for (const sink of sinks) sink.deliveries = sink.frames = sink.bytes = 0;
      routingMs = 0;
      routed = 0;
      const started = performance.now();
      for (let i = 0; i < WRITES; i++) {
        await tx.transaction(async (m) => {
          const tasks = m.getRepository(Task);
          const task = await tasks.findOneByOrFail({ id: ids[(i * 31) % ids.length] });
          task.title = `write ${i} of ${perTurn}`;
          if (i % 3 === 0) task.status = STATUSES[(i / 3) % 3];
          if (i % 4 === 0) task.priority = 1 + (i % 5);
          if (i % 5 === 0) task.budget = i;
          await tasks.save(task);
        });
        if ((i + 1) % perTurn === 0) await turn();
      }
      await turn();
      const wallMs = performance.now() - started;
      const deliveries = sinks.reduce((n, s) => n + s.deliveries, 0);
      if (routed !== WRITES) throw new Error(`routed ${routed} changes for ${WRITES} writes`);
      if (deliveries === 0) throw new Error('no delivery: the pipeline did not run');
      return {
        perTurn,
        wallMs,
        routingMs,
        deliveries,
        frames: sinks.reduce((n, s) => n + s.frames, 0),
        bytes: sinks.reduce((n, s) => n + s.bytes, 0),
      };
    };
    const results = [await run(1), await run(50)];
    engine.dispatch = dispatch;

    const redacted = sinks.filter((s) => s.principal.roles[0] === 'member').length;
    console.log(
      `engine bench: SQLite, ${SUBS} subscriptions of tasks on in-memory sinks ` +
        `(${redacted} of members, who see no budget), ${USERS} users, ${ids.length} tasks written to`,
    );
    console.log(
      `subscription creation (no snapshot): p50 ${percentile(createMs, 50).toFixed(3)} ms, ` +
        `p99 ${percentile(createMs, 99).toFixed(3)} ms, max ${createMs[createMs.length - 1].toFixed(3)} ms`,
    );
    for (const r of results) {
      console.log(
        `${r.perTurn === 1 ? 'one write per turn' : `${r.perTurn} writes per turn`}: ` +
          `${WRITES} writes in ${r.wallMs.toFixed(0)} ms = ${((WRITES * 1000) / r.wallMs).toFixed(0)} writes/s; ` +
          `${r.deliveries} deliveries (${(r.deliveries / WRITES).toFixed(0)} per write, ` +
          `${(r.bytes / r.deliveries).toFixed(0)} B each) in ${r.frames} frames; ` +
          `${((r.deliveries * 1000) / r.wallMs).toFixed(0)} deliveries/s over wall time, ` +
          `${((r.deliveries * 1000) / r.routingMs).toFixed(0)} over routing time ` +
          `(routing ${((100 * r.routingMs) / r.wallMs).toFixed(0)}% of wall time)`,
      );
    }
    console.log(
      `ENGINE_BENCH_JSON ${JSON.stringify({
        subscriptions: SUBS,
        createP50Ms: percentile(createMs, 50),
        createP99Ms: percentile(createMs, 99),
        writes: WRITES,
        runs: results.map((r) => ({
          writesPerTurn: r.perTurn,
          writesPerSecond: (WRITES * 1000) / r.wallMs,
          deliveries: r.deliveries,
          frames: r.frames,
          deliveriesPerSecond: (r.deliveries * 1000) / r.wallMs,
          deliveriesPerRoutingSecond: (r.deliveries * 1000) / r.routingMs,
        })),
      })}`,
    );
  } finally {
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
