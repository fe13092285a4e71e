import type { EntitySubscriberInterface, QueryRunner } from 'typeorm';
import { DataSource, EntityManager, QueryFailedError } from 'typeorm';
import { AuditService, ChangeLogEntry, ChangeLogService, TransactionRunner } from '@app/realtime';
import { randomUUID } from 'node:crypto';
import { Project } from '../src/projects/project.entity';
import { Task } from '../src/tasks/task.entity';
import { describeEachDb, startTestApp, TestApp, TestUser, USERS } from './utils/app';
import type { DatabaseKind } from './utils/services';
import { Msg, WsClient } from './utils/ws-client';

/**
 * Issue 3, "Must show": the subscription engine end to end. The real app, real `ws`
 * clients, writes through the sample app's REST API (or the TransactionRunner where a
 * transaction's shape matters), on SQLite and PostgreSQL.
 *
 * Each test works in a project of its own and subscribes with a `projectId` filter, so the
 * tests of one app do not see each other's changes. "Nothing else arrived" is proven with a
 * fence: a later change that the same connection must receive, then a ping, whose pong
 * the server writes after every frame of the changes before it.
 */

type Doc = Record<string, any>;
type Change = Record<string, any>;

/** Runs `fn(0..count-1)` with at most `concurrency` calls in flight; results in order. */
async function pool<T>(
  count: number,
  concurrency: number,
  fn: (i: number) => Promise<T>,
): Promise<T[]> {
  const out = new Array<T>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const i = next++;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}

const inProject = (projectId: string) => ({
  type: 'field',
  field: 'projectId',
  operator: 'eq',
  value: projectId,
});

/** A query on the tasks of one project, with more filters and query keys. */
const tasksOf = (
  projectId: string,
  extra: Record<string, unknown> = {},
  filters: unknown[] = [],
) => ({
  collection: 'tasks',
  filters: [inProject(projectId), ...filters],
  ...extra,
});

const seqs = (changes: Change[]) => changes.map((c) => Number(c.seq));

function expectIncreasing(values: number[]): void {
  for (let i = 1; i < values.length; i++) {
    if (!(values[i] > values[i - 1])) {
      throw new Error(`not increasing at ${i}: ${values[i - 1]} then ${values[i]}`);
    }
  }
}

/** Applies changes in order to a map of documents by id (what a client cache does). */
function apply(state: Map<string, Doc>, changes: Change[]): Map<string, Doc> {
  for (const c of changes) {
    if (c.event === 'removed') state.delete(c.documentId);
    else state.set(c.documentId, c.document);
  }
  return state;
}

/** Every data_change frame of a subscription, in arrival order. */
const framesOf = (client: WsClient, subscriptionId: string): Msg[] =>
  client.messages.filter(
    (m) => m.type === 'data_change' && m.data.subscriptionId === subscriptionId,
  );

/** The first data_change of the subscription holding a change that matches. */
function waitForChange(
  client: WsClient,
  subscriptionId: string,
  pred: (c: Change) => boolean,
  timeoutMs = 15_000,
): Promise<Change> {
  return client
    .next(
      (m) =>
        m.type === 'data_change' &&
        m.data.subscriptionId === subscriptionId &&
        m.data.changes.some(pred),
      timeoutMs,
    )
    .then((m) => m.data.changes.find(pred));
}

/** Every frame the server wrote before this call has arrived once the pong has. */
async function settle(...clients: WsClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c.request('ping')));
}

/** Helpers bound to one running app. */
function helpers(getApp: () => TestApp) {
  const clients: WsClient[] = [];

  async function connect(user: TestUser): Promise<WsClient> {
    const t = getApp();
    const c = await WsClient.open(t.ws, t.token(user));
    clients.push(c);
    return c;
  }

  async function closeAll(): Promise<void> {
    await Promise.all(
      clients.splice(0).map(async (c) => {
        if (c.closed) return;
        c.close();
        await c.waitClose().catch(() => undefined);
      }),
    );
  }

  async function newProject(user: TestUser = USERS.alice, department = 'eng'): Promise<string> {
    const r = await getApp().api(user, 'POST', '/api/projects', { name: 'engine', department });
    if (r.status !== 201) throw new Error(`project: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.id as string;
  }

  async function createTask(
    user: TestUser,
    projectId: string,
    fields: Record<string, unknown> = {},
  ): Promise<Doc> {
    const r = await getApp().api(user, 'POST', '/api/tasks', {
      projectId,
      title: 'task',
      department: 'eng',
      ...fields,
    });
    if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async function patchTask(user: TestUser, id: string, patch: Record<string, unknown>) {
    const r = await getApp().api(user, 'PATCH', `/api/tasks/${id}`, patch);
    if (r.status !== 200) throw new Error(`patch: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as Doc;
  }

  async function deleteTask(user: TestUser, id: string): Promise<void> {
    const r = await getApp().api(user, 'DELETE', `/api/tasks/${id}`);
    if (r.status !== 204) throw new Error(`delete: ${r.status} ${JSON.stringify(r.body)}`);
  }

  /** The project's tasks as `user` reads them over REST, every page. */
  async function listAll(user: TestUser, projectId: string): Promise<Doc[]> {
    const items: Doc[] = [];
    let cursor: string | null = null;
    do {
      const r: { status: number; body: any } = await getApp().api(
        user,
        'GET',
        `/api/tasks?projectId=${projectId}&limit=200${cursor ? `&cursor=${cursor}` : ''}`,
      );
      if (r.status !== 200) throw new Error(`list: ${r.status}`);
      items.push(...r.body.items);
      cursor = r.body.nextCursor;
    } while (cursor);
    return items;
  }

  /** The change log rows of some documents, in seq order. */
  async function logOf(documentIds: Iterable<string>): Promise<ChangeLogEntry[]> {
    const ids = new Set(documentIds);
    const rows = await getApp()
      .app.get(DataSource)
      .getRepository(ChangeLogEntry)
      .find({ where: { collection: 'tasks' }, order: { seq: 'ASC' } });
    return rows.filter((r) => ids.has(r.documentId));
  }

  /** A new, unsaved task of a project (for writes through the TransactionRunner). */
  const draft = (m: EntityManager, projectId: string, title: string) =>
    m.getRepository(Task).create({
      projectId,
      title,
      ownerId: 'alice',
      department: 'eng',
      tags: [],
    });

  /** The queries the DataSource's logger was given while `fn` ran (the log INSERT with its COMMIT included). */
  async function queriesDuring(fn: () => Promise<unknown>): Promise<string[]> {
    const logged: string[] = [];
    const spy = jest
      .spyOn(getApp().app.get(DataSource).logger, 'logQuery')
      .mockImplementation((query: string) => void logged.push(query));
    try {
      await fn();
    } finally {
      spy.mockRestore();
    }
    return logged;
  }

  /** Saves new tasks of a project in one transaction; their ids in save order. */
  async function saveInOneTransaction(projectId: string, titles: string[]): Promise<string[]> {
    const ids: string[] = [];
    await getApp()
      .app.get(TransactionRunner)
      .transaction(async (m) => {
        for (const title of titles) {
          ids.push((await m.getRepository(Task).save(draft(m, projectId, title))).id);
        }
      });
    return ids;
  }

  /**
   * Transactions on one connection of their own: `tx(title, first?)` runs `first` (SQL),
   * saves a new task of the project and commits; it resolves to the commit's error, if any
   * (the transaction is then rolled back).
   */
  async function oneConnection(
    projectId: string,
    fn: (tx: (title: string, first?: string) => Promise<unknown>) => Promise<void>,
  ): Promise<void> {
    const qr = getApp().app.get(DataSource).createQueryRunner();
    try {
      await fn(async (title, first) => {
        await qr.startTransaction();
        if (first) await qr.query(first);
        await qr.manager.getRepository(Task).save(draft(qr.manager, projectId, title));
        const failed = await qr.commitTransaction().then(
          () => undefined,
          (e: unknown) => e,
        );
        if (failed) await qr.rollbackTransaction();
        return failed;
      });
    } finally {
      await qr.release();
    }
  }

  return {
    queriesDuring,
    saveInOneTransaction,
    oneConnection,
    connect,
    closeAll,
    newProject,
    createTask,
    patchTask,
    deleteTask,
    listAll,
    logOf,
    draft,
  };
}

/** Prometheus text → value of an unlabelled sample. */
function sample(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`no sample ${name}`);
  return Number(line.slice(name.length + 1));
}

describeEachDb('engine', (db: DatabaseKind) => {
  let t: TestApp;
  const h = helpers(() => t);
  const { connect, newProject, createTask, patchTask, deleteTask, listAll, logOf, draft } = h;

  beforeAll(async () => {
    t = await startTestApp(db);
  });
  afterEach(() => h.closeAll());
  afterAll(() => t?.close());

  describe('transactions', () => {
    it('a rolled-back transaction delivers nothing; a committed one delivers once', async () => {
      const pid = await newProject();
      const c = await connect(USERS.alice);
      const sub = await c.subscribe(tasksOf(pid));
      const runner = t.app.get(TransactionRunner);

      await expect(
        runner.transaction(async (m) => {
          await m.getRepository(Task).save(draft(m, pid, 'rolled back'));
          throw new Error('abort');
        }),
      ).rejects.toThrow('abort');
      const kept = await runner.transaction((m) =>
        m.getRepository(Task).save(draft(m, pid, 'committed')),
      );
      await patchTask(USERS.alice, kept.id, { title: 'fence' });

      await c.waitChanges(sub, 2);
      await settle(c);
      expect(
        c.changes(sub).map((x) => [x.operation, x.event, x.documentId, x.document.title]),
      ).toEqual([
        ['insert', 'added', kept.id, 'committed'],
        ['update', 'modified', kept.id, 'fence'],
      ]);
      expectIncreasing(seqs(c.changes(sub)));
      expect((await listAll(USERS.alice, pid)).map((x) => x.title)).toEqual(['fence']);
      expect((await logOf([kept.id])).map((r) => r.operation)).toEqual(['insert', 'update']);
    });

    it.each([
      ['a transaction that saved a task too', true],
      ['a transaction that saved nothing of a registered entity', false],
    ])(
      'a change saved by another commit listener, after the one of change capture ran, is logged and delivered (%s)',
      async (_, alsoSaves) => {
        const pid = await newProject();
        const c = await connect(USERS.alice);
        const sub = await c.subscribe(tasksOf(pid));
        const dataSource = t.app.get(DataSource);
        let marked: QueryRunner | undefined;
        // registered after change capture; TypeORM starts every listener, then awaits them
        const listener: EntitySubscriberInterface = {
          beforeTransactionCommit: async (event) => {
            if (!marked || event.queryRunner !== marked) return;
            marked = undefined;
            await new Promise((r) => setTimeout(r, 10));
            await event.manager
              .getRepository(Task)
              .save(draft(event.manager, pid, 'by the listener'));
          },
        };
        dataSource.subscribers.push(listener);
        try {
          await t.app.get(TransactionRunner).transaction(async (m) => {
            marked = m.queryRunner;
            if (alsoSaves) await m.getRepository(Task).save(draft(m, pid, 'by the transaction'));
            else await m.query('SELECT 1');
          });
        } finally {
          dataSource.subscribers.splice(dataSource.subscribers.indexOf(listener), 1);
        }
        const titles = alsoSaves ? ['by the transaction', 'by the listener'] : ['by the listener'];
        await c.waitChanges(sub, titles.length);
        await settle(c);
        const got = c.changes(sub);
        expect(got.map((x) => x.document.title)).toEqual(titles);
        expectIncreasing(seqs(got));
        const log = await logOf(got.map((x) => x.documentId));
        expect(log.map((r) => String(r.seq))).toEqual(got.map((x) => x.seq));
      },
    );

    it('a commit listener that fails rolls the transaction back (nothing delivered or logged); the next transaction is logged and delivered once', async () => {
      const pid = await newProject();
      const c = await connect(USERS.alice);
      const sub = await c.subscribe(tasksOf(pid));
      const dataSource = t.app.get(DataSource);
      const runner = t.app.get(TransactionRunner);
      let marked: QueryRunner | undefined;
      const listener: EntitySubscriberInterface = {
        beforeTransactionCommit: (event) =>
          event.queryRunner === marked ? Promise.reject(new Error('listener says no')) : undefined,
      };
      dataSource.subscribers.push(listener);
      try {
        const failed = runner.transaction(async (m) => {
          marked = m.queryRunner;
          await m.getRepository(Task).save(draft(m, pid, 'refused'));
        });
        await expect(failed).rejects.toThrow('listener says no');
      } finally {
        marked = undefined;
        dataSource.subscribers.splice(dataSource.subscribers.indexOf(listener), 1);
      }
      // on SQLite the same query runner serves this one: nothing of the failed one remains
      await runner.transaction((m) => m.getRepository(Task).save(draft(m, pid, 'accepted')));
      const [change] = await c.waitChanges(sub, 1);
      await settle(c);
      expect(c.changes(sub)).toHaveLength(1);
      expect(change.document.title).toBe('accepted');
      expect(await listAll(USERS.alice, pid)).toHaveLength(1);
      const log = await logOf([change.documentId]);
      expect(log.map((r) => String(r.seq))).toEqual([change.seq]);
      const all = await dataSource
        .getRepository(ChangeLogEntry)
        .find({ where: { collection: 'tasks' }, order: { seq: 'DESC' }, take: 3 });
      expect(all.filter((r) => r.after?.title === 'refused')).toEqual([]);
    });

    it('a rolled-back savepoint drops only its own changes; the outer commit delivers the rest', async () => {
      const pid = await newProject();
      const c = await connect(USERS.alice);
      const sub = await c.subscribe(tasksOf(pid));
      const runner = t.app.get(TransactionRunner);
      const save = (m: EntityManager, title: string) =>
        m.getRepository(Task).save(draft(m, pid, title));

      await runner.transaction(async (m) => {
        await save(m, 'outer 1');
        await m.transaction((inner) => save(inner, 'released savepoint'));
        await expect(
          m.transaction(async (inner) => {
            await save(inner, 'rolled-back savepoint');
            throw new Error('inner');
          }),
        ).rejects.toThrow('inner');
        await save(m, 'outer 2');
      });
      // the first captured write of this one is inside the savepoint that rolls back
      await runner.transaction(async (m) => {
        await expect(
          m.transaction(async (inner) => {
            await save(inner, 'rolled back first');
            throw new Error('inner');
          }),
        ).rejects.toThrow('inner');
        await save(m, 'outer 3');
      });
      const fence = await createTask(USERS.alice, pid, { title: 'fence' });

      await waitForChange(c, sub, (x) => x.documentId === fence.id);
      await settle(c);
      const titles = c.changes(sub).map((x) => x.document.title);
      expect(titles).toEqual(['outer 1', 'released savepoint', 'outer 2', 'outer 3', 'fence']);
      expectIncreasing(seqs(c.changes(sub)));
      expect((await listAll(USERS.alice, pid)).map((x) => x.title).sort()).toEqual(
        [...titles].sort(),
      );
    });
  });

  describe('authorization and redaction', () => {
    it('manager, member, other department: who receives what, budget only for managers; a department move is removed / added', async () => {
      const pid = await newProject();
      const [b, c, d, e] = await Promise.all(
        [USERS.bob, USERS.carol, USERS.dave, USERS.erin].map((u) => connect(u)),
      );
      const [bs, cs, ds, es] = await Promise.all(
        [b, c, d, e].map((client) => client.subscribe(tasksOf(pid))),
      );

      const task = await createTask(USERS.alice, pid, {
        title: 'confidential',
        budget: 100,
        assigneeId: 'carol',
      });
      await patchTask(USERS.bob, task.id, { budget: 250 });
      await patchTask(USERS.carol, task.id, { status: 'doing' });
      await patchTask(USERS.alice, task.id, { department: 'sales', budget: 300 });
      const last = await patchTask(USERS.alice, task.id, { title: 'in sales now' });

      await Promise.all([
        waitForChange(d, ds, (x) => x.metadata.version === last.version),
        waitForChange(e, es, (x) => x.metadata.version === last.version),
      ]);
      await settle(b, c, d, e);
      const events = (client: WsClient, sub: string) =>
        client.changes(sub).map((x) => `${x.operation} ${x.event} v${x.metadata.version}`);

      // bob, manager of eng: everything while it is in eng, budget included
      expect(events(b, bs)).toEqual([
        'insert added v1',
        'update modified v2',
        'update modified v3',
        'update removed v4',
      ]);
      const [bAdd, bBudget, bStatus, bRemoved] = b.changes(bs);
      expect(bAdd.document).toMatchObject({ id: task.id, title: 'confidential', budget: 100 });
      expect(bAdd.changedFields).toContain('budget');
      expect(bBudget.changedFields).toEqual(['budget']);
      expect(bBudget.document.budget).toBe(250);
      expect(bStatus.changedFields).toEqual(['status']);
      expect(bStatus.document).toMatchObject({ status: 'doing', budget: 250 });
      expect(bRemoved.document).toBeNull();

      // carol, member of eng: the same changes, never the budget
      expect(events(c, cs)).toEqual(events(b, bs));
      for (const x of c.changes(cs)) {
        expect(x.changedFields).not.toContain('budget');
        if (x.document !== null) expect(x.document).not.toHaveProperty('budget');
      }
      const [cAdd, cBudget, cStatus, cRemoved] = c.changes(cs);
      expect(cAdd.document).toMatchObject({ id: task.id, title: 'confidential', version: 1 });
      expect(cBudget.changedFields).toEqual([]);
      expect(cBudget.document.version).toBe(2);
      expect(cStatus.changedFields).toEqual(['status']);
      expect(cRemoved.document).toBeNull();

      // sales: nothing until the task arrives, then it is added
      expect(events(d, ds)).toEqual(['update added v4', 'update modified v5']);
      expect(events(e, es)).toEqual(['update added v4', 'update modified v5']);
      expect(e.changes(es)[0].document).toMatchObject({ department: 'sales', budget: 300 });
      expect(d.changes(ds)[0].document).toMatchObject({ department: 'sales', status: 'doing' });
      expect(d.changes(ds)[0].document).not.toHaveProperty('budget');
      expect(d.changes(ds)[0].changedFields).toEqual(['department']);
      expect(e.changes(es)[0].changedFields.sort()).toEqual(['budget', 'department']);
      expect(d.changes(ds)[1].document.title).toBe('in sales now');
    });
  });

  describe('filters', () => {
    it('every operator, case-insensitive by default and caseSensitive, user and custom filters: enter and leave the result set', async () => {
      const pid = await newProject();
      const alice = await connect(USERS.alice);
      const carol = await connect(USERS.carol);
      const bob = await connect(USERS.bob);
      const day = 24 * 3600 * 1000;
      const now = new Date().toISOString();
      const f = (field: string, operator: string, value: unknown, caseSensitive?: boolean) => ({
        type: 'field',
        field,
        operator,
        value,
        ...(caseSensitive === undefined ? {} : { caseSensitive }),
      });
      const cases: Record<string, unknown[]> = {
        'eq ci': [f('title', 'eq', 'alpha report')],
        'eq cs miss': [f('title', 'eq', 'alpha report', true)],
        'eq cs': [f('title', 'eq', 'Alpha Report', true)],
        'eq null': [f('assigneeId', 'eq', null)],
        'ne ci': [f('title', 'ne', 'BETA PLAN')],
        'ne status': [f('status', 'ne', 'todo')],
        gt: [f('priority', 'gt', 3)],
        gte: [f('priority', 'gte', 3)],
        lt: [f('priority', 'lt', 3)],
        lte: [f('priority', 'lte', 3)],
        'gt date': [f('dueAt', 'gt', now)],
        'in ci': [f('status', 'in', ['TODO', 'Doing'])],
        'in cs': [f('status', 'in', ['TODO'], true)],
        'in numbers': [f('priority', 'in', [1, 5])],
        nin: [f('status', 'nin', ['done'])],
        'contains ci': [f('title', 'contains', 'REPORT')],
        'contains cs': [f('title', 'contains', 'report', true)],
        'contains element': [f('tags', 'contains', 'urgent')],
        'startsWith ci': [f('title', 'startsWith', 'ALPHA')],
        'startsWith cs': [f('title', 'startsWith', 'beta', true)],
        'endsWith ci': [f('title', 'endsWith', 'REPORT')],
        'endsWith cs': [f('title', 'endsWith', 'Report', true)],
        'exists true': [f('dueAt', 'exists', true)],
        'exists false': [f('assigneeId', 'exists', false)],
        overdue: [{ type: 'custom', name: 'overdue' }],
      };
      const subs: Record<string, string> = {};
      for (const [name, filters] of Object.entries(cases)) {
        subs[name] = await alice.subscribe(tasksOf(pid, {}, filters));
      }
      const all = await alice.subscribe(tasksOf(pid));
      const carolMine = await carol.subscribe(
        tasksOf(pid, {}, [{ type: 'user', field: 'assigneeId' }]),
      );
      const carolAll = await carol.subscribe(tasksOf(pid));
      const bobMine = await bob.subscribe(
        tasksOf(pid, {}, [{ type: 'user', field: 'assigneeId' }]),
      );
      const bobAll = await bob.subscribe(tasksOf(pid));

      const past = new Date(Date.now() - day).toISOString();
      const future = new Date(Date.now() + day).toISOString();
      const A = await createTask(USERS.alice, pid, {
        title: 'Alpha Report',
        priority: 1,
        status: 'todo',
        tags: ['Urgent', 'ui'],
        assigneeId: 'carol',
        dueAt: past,
      });
      const B = await createTask(USERS.alice, pid, {
        title: 'beta plan',
        priority: 3,
        status: 'doing',
        tags: ['backend'],
        dueAt: future,
      });
      const C = await createTask(USERS.alice, pid, {
        title: 'Gamma report',
        priority: 5,
        status: 'done',
        tags: [],
        assigneeId: 'bob',
        dueAt: past,
      });
      await patchTask(USERS.alice, B.id, { priority: 1 });
      await patchTask(USERS.alice, A.id, { status: 'done' });
      await patchTask(USERS.alice, C.id, { title: 'Gamma summary' });
      await deleteTask(USERS.alice, B.id);

      await Promise.all([
        alice.waitChanges(all, 7),
        carol.waitChanges(carolAll, 7),
        bob.waitChanges(bobAll, 7),
      ]);
      await settle(alice, carol, bob);
      const name: Record<string, string> = { [A.id]: 'A', [B.id]: 'B', [C.id]: 'C' };
      const seen = (client: WsClient, sub: string) =>
        client.changes(sub).map((x) => `${name[x.documentId]} ${x.event}`);
      const got = Object.fromEntries(Object.entries(subs).map(([n, s]) => [n, seen(alice, s)]));
      const full = [
        'A added',
        'B added',
        'C added',
        'B modified',
        'A modified',
        'C modified',
        'B removed',
      ];
      expect(seen(alice, all)).toEqual(full);
      expect(got).toEqual({
        'eq ci': ['A added', 'A modified'],
        'eq cs miss': [],
        'eq cs': ['A added', 'A modified'],
        'eq null': ['B added', 'B modified', 'B removed'],
        'ne ci': ['A added', 'C added', 'A modified', 'C modified'],
        'ne status': ['B added', 'C added', 'B modified', 'A added', 'C modified', 'B removed'],
        gt: ['C added', 'C modified'],
        gte: ['B added', 'C added', 'B removed', 'C modified'],
        lt: ['A added', 'B added', 'A modified', 'B removed'],
        lte: ['A added', 'B added', 'B modified', 'A modified', 'B removed'],
        'gt date': ['B added', 'B modified', 'B removed'],
        'in ci': ['A added', 'B added', 'B modified', 'A removed', 'B removed'],
        'in cs': [],
        'in numbers': ['A added', 'C added', 'B added', 'A modified', 'C modified', 'B removed'],
        nin: ['A added', 'B added', 'B modified', 'A removed', 'B removed'],
        'contains ci': ['A added', 'C added', 'A modified', 'C removed'],
        'contains cs': ['C added', 'C removed'],
        'contains element': ['A added', 'A modified'],
        'startsWith ci': ['A added', 'A modified'],
        'startsWith cs': ['B added', 'B modified', 'B removed'],
        'endsWith ci': ['A added', 'C added', 'A modified', 'C removed'],
        'endsWith cs': ['A added', 'A modified'],
        'exists true': full,
        'exists false': [],
        overdue: ['A added', 'A removed'],
      });
      expect(seen(carol, carolMine)).toEqual(['A added', 'A modified']);
      expect(seen(bob, bobMine)).toEqual(['C added', 'C modified']);

      // an update that leaves the result set is `removed` with no document; entering is `added`
      const leave = alice.changes(subs['in ci']).find((x) => x.event === 'removed');
      expect(leave).toMatchObject({ operation: 'update', documentId: A.id, document: null });
      const enter = alice.changes(subs['lt']).find((x) => x.documentId === B.id);
      expect(enter).toMatchObject({ operation: 'update', event: 'added' });
      expect(enter!.document).toMatchObject({ id: B.id, priority: 1 });
      const gone = alice.changes(subs['lte']).at(-1)!;
      expect(gone).toMatchObject({ operation: 'delete', event: 'removed', document: null });
    });

    it('fieldPath: updates only when the path changed; inserts, deletes, entering and leaving always', async () => {
      const pid = await newProject();
      const c = await connect(USERS.alice);
      const status = await c.subscribe(tasksOf(pid, { fieldPath: 'status' }));
      const titleOfDoing = await c.subscribe(
        tasksOf(pid, { fieldPath: 'title' }, [
          { type: 'field', field: 'status', operator: 'eq', value: 'doing' },
        ]),
      );
      const all = await c.subscribe(tasksOf(pid));

      const task = await createTask(USERS.alice, pid, { title: 'one' });
      await patchTask(USERS.alice, task.id, { title: 'two' });
      await patchTask(USERS.alice, task.id, { status: 'doing' });
      await patchTask(USERS.alice, task.id, { priority: 5 });
      await patchTask(USERS.alice, task.id, { title: 'three' });
      await patchTask(USERS.alice, task.id, { status: 'done' });
      await deleteTask(USERS.alice, task.id);

      await c.waitChanges(all, 7);
      await settle(c);
      const seen = (sub: string) =>
        c.changes(sub).map((x) => `${x.operation} ${x.event} ${x.changedFields.join(',')}`);
      const everyField = c.changes(all)[0].changedFields.join(',');
      expect(seen(status)).toEqual([
        `insert added ${everyField}`,
        'update modified status',
        'update modified status',
        `delete removed ${everyField}`,
      ]);
      expect(seen(titleOfDoing)).toEqual([
        'update added status',
        'update modified title',
        'update removed status',
      ]);
      expect(c.changes(titleOfDoing)[1].document.title).toBe('three');
    });
  });

  describe('snapshot', () => {
    it('250 matching documents in chunks of 100 while writes continue: snapshot + stream = final state, no duplicate', async () => {
      const pid = await newProject();
      const created = await pool(250, 10, (i) =>
        createTask(USERS.alice, pid, { title: `doc ${i}`, priority: 1 + (i % 5), budget: i }),
      );
      const ids = created.map((x) => x.id as string);
      const c = await connect(USERS.bob);

      let writing = true;
      let written = 0;
      let firstWrites!: () => void;
      const started = new Promise<void>((resolve) => (firstWrites = resolve));
      const writer = async (w: number) => {
        for (let i = 0; writing; i++) {
          const id = ids[(w * 97 + i * 31) % ids.length];
          const patch =
            i % 3 === 0
              ? { title: `w${w} ${i}` }
              : i % 3 === 1
                ? { priority: 1 + ((w + i) % 5) }
                : { budget: w * 1000 + i };
          await patchTask(USERS.bob, id, patch);
          if (++written === 20) firstWrites();
        }
      };
      const writers = [0, 1, 2, 3].map(writer);
      await started;

      const reply = await c.request('subscribe', {
        query: tasksOf(pid, { includeInitialData: true, batchSize: 100 }),
      });
      expect(reply.type).toBe('subscription_created');
      const sub = reply.data.subscriptionId as string;
      await c.next(
        (m) => m.type === 'initial_data' && m.data.subscriptionId === sub && m.data.isLast,
      );
      // the stream carries on after the snapshot while the writers still write
      await c.waitChanges(sub, 20);
      writing = false;
      await Promise.all(writers);
      const fence = await patchTask(USERS.bob, ids[0], { title: 'final' });
      await waitForChange(
        c,
        sub,
        (x) => x.documentId === fence.id && x.metadata.version === fence.version,
      );

      const mine = c.messages.filter(
        (m) => m.data?.subscriptionId === sub && m.type !== 'subscription_created',
      );
      const chunks = mine.filter((m) => m.type === 'initial_data').map((m) => m.data);
      expect(
        chunks.map((x) => [x.chunkIndex, x.totalChunks, x.isLast, x.documents.length]),
      ).toEqual([
        [0, 3, false, 100],
        [1, 3, false, 100],
        [2, 3, true, 50],
      ]);
      const snapshotSeq = chunks[0].seq as string;
      expect(chunks.every((x) => x.seq === snapshotSeq)).toBe(true);
      expect(snapshotSeq).toMatch(/^[0-9]+$/);
      // every chunk before the first change; every change after the snapshot's position
      const firstChange = mine.findIndex((m) => m.type === 'data_change');
      expect(mine.slice(0, firstChange).map((m) => m.type)).toEqual(Array(3).fill('initial_data'));
      const stream = c.changes(sub);
      expect(Number(stream[0].seq)).toBeGreaterThan(Number(snapshotSeq));
      expectIncreasing(seqs(stream));

      const snapshot = chunks.flatMap((x) => x.documents as Doc[]);
      expect(new Set(snapshot.map((x) => x.id)).size).toBe(250);
      expect(snapshot.every((x) => typeof x.budget === 'number')).toBe(true);
      // the snapshot is the state at its seq: each document's version is that of its last
      // change at or below the seq
      const log = await logOf(ids);
      const versionAt = new Map<string, number>();
      for (const row of log)
        if (row.seq <= Number(snapshotSeq)) versionAt.set(row.documentId, row.version!);
      for (const doc of snapshot)
        expect([doc.id, doc.version]).toEqual([doc.id, versionAt.get(doc.id)]);
      // the stream is exactly the log after the snapshot's seq
      expect(seqs(stream)).toEqual(
        log.filter((r) => r.seq > Number(snapshotSeq)).map((r) => r.seq),
      );

      const state = apply(new Map(snapshot.map((x) => [x.id as string, x])), stream);
      const rest = await listAll(USERS.bob, pid);
      expect(rest).toHaveLength(250);
      expect(new Map(rest.map((x) => [x.id as string, x]))).toEqual(state);
    });
  });

  describe('resume', () => {
    it('after 1 000 missed changes: all replayed in order, then live, with no gap or duplicate', async () => {
      const pid = await newProject();
      const docs = (
        await pool(10, 10, (i) => createTask(USERS.alice, pid, { title: `doc ${i}` }))
      ).map((x) => x.id as string);
      const first = await connect(USERS.alice);
      const sub1 = await first.subscribe(tasksOf(pid));
      await patchTask(USERS.alice, docs[0], { title: 'seen' });
      const [seen] = await first.waitChanges(sub1, 1);
      first.close();
      await first.waitClose();

      await pool(1000, 8, (i) =>
        patchTask(
          USERS.alice,
          docs[i % docs.length],
          i % 2 ? { title: `missed ${i}` } : { priority: 1 + (Math.floor(i / 10) % 5) },
        ),
      );

      const c = await connect(USERS.alice);
      // live writes race with the replay
      const live = pool(30, 3, (i) =>
        patchTask(USERS.alice, docs[i % docs.length], { title: `live ${i}` }),
      );
      const sub = await c.subscribe(tasksOf(pid), { resumeFrom: seen.seq });
      await live;
      const last = await patchTask(USERS.alice, docs[0], { title: 'last' });

      const expected = (await logOf(docs)).filter((r) => r.seq > Number(seen.seq));
      expect(expected.length).toBe(1031);
      const got = await c.waitChanges(sub, expected.length, 30_000);
      await settle(c);
      expect(c.changes(sub)).toHaveLength(expected.length);
      expect(seqs(got)).toEqual(expected.map((r) => r.seq));
      expect(got.map((x) => [x.documentId, x.metadata.version])).toEqual(
        expected.map((r) => [r.documentId, r.version]),
      );
      expect(got.at(-1)).toMatchObject({
        documentId: docs[0],
        document: { title: 'last', version: last.version },
      });
      expect(c.messages.some((m) => m.type === 'resync_required')).toBe(false);
      // applied over what the first connection had seen, the stream gives today's documents
      const rest = await listAll(USERS.alice, pid);
      const state = apply(new Map(), got);
      for (const doc of rest) expect(state.get(doc.id)?.version).toBe(doc.version);
    });

    describe('past retention (CHANGE_LOG_MAX_ROWS=50)', () => {
      let r: TestApp;
      const rh = helpers(() => r);
      beforeAll(async () => {
        r = await startTestApp(db, { CHANGE_LOG_MAX_ROWS: '50' });
      });
      afterEach(() => rh.closeAll());
      afterAll(() => r?.close());

      it('resync_required past retention, a fresh snapshot with includeInitialData; resume within it replays', async () => {
        const pid = await rh.newProject();
        const task = await rh.createTask(USERS.alice, pid, { title: 'v1' });
        const head0 = Number((await rh.logOf([task.id]))[0].seq);
        for (let i = 2; i <= 81; i++) await rh.patchTask(USERS.alice, task.id, { title: `v${i}` });
        const pruned = await r.app.get(ChangeLogService).prune();
        expect(pruned).toBeGreaterThanOrEqual(31);
        const kept = await rh.logOf([task.id]);
        expect(kept).toHaveLength(50);

        const c = await rh.connect(USERS.alice);
        // expired, without initial data: resync_required, then live
        const expired = await c.subscribe(tasksOf(pid), { resumeFrom: String(head0) });
        await c.next((m) => m.type === 'resync_required' && m.data.subscriptionId === expired);
        // expired, with initial data: resync_required, then a fresh snapshot, then live
        const reply = await c.request('subscribe', {
          query: tasksOf(pid, { includeInitialData: true }),
          resumeFrom: String(head0),
        });
        expect(reply.type).toBe('subscription_created');
        const fresh = reply.data.subscriptionId as string;
        const snap = await c.next(
          (m) => m.type === 'initial_data' && m.data.subscriptionId === fresh,
        );
        // within retention: the last 10 changes are replayed, no resync
        const from = kept[39].seq;
        const within = await c.subscribe(tasksOf(pid, { includeInitialData: true }), {
          resumeFrom: String(from),
        });
        const replayed = (await c.waitChanges(within, 10)).slice();
        const next = await rh.patchTask(USERS.alice, task.id, { title: 'live' });
        await Promise.all(
          [fresh, within].map((s) =>
            waitForChange(c, s, (x) => x.metadata.version === next.version),
          ),
        );
        await settle(c);

        const types = (s: string) =>
          c.messages.filter((m) => m.data?.subscriptionId === s).map((m) => m.type);
        // nothing of the expired range is replayed
        expect(types(expired).slice(0, 2)).toEqual(['subscription_created', 'resync_required']);
        expect(c.changes(expired).every((x) => Number(x.seq) > kept[49].seq)).toBe(true);
        expect(types(fresh)).toEqual([
          'subscription_created',
          'resync_required',
          'initial_data',
          'data_change',
        ]);
        expect(snap.data).toMatchObject({ chunkIndex: 0, totalChunks: 1, isLast: true });
        expect(snap.data.documents).toEqual([
          expect.objectContaining({ id: task.id, title: 'v81', version: 81 }),
        ]);
        expect(Number(snap.data.seq)).toBe(kept[49].seq);
        expect(types(within)).not.toContain('resync_required');
        expect(types(within)).not.toContain('initial_data');
        expect(seqs(replayed)).toEqual(kept.slice(40).map((x) => x.seq));
        expect(c.changes(within).map((x) => x.document.title)).toEqual([
          ...kept.slice(40).map((_, i) => `v${72 + i}`),
          'live',
        ]);
      });

      it('retention by age: the rows older than maxAge go, from the first younger row on all stay; all old: only the head stays', async () => {
        const DAY = 24 * 60 * 60 * 1000; // the default maxAge, which this app keeps
        const pid = await rh.newProject();
        const task = await rh.createTask(USERS.alice, pid, { title: 'old 1' });
        for (let i = 2; i <= 5; i++)
          await rh.patchTask(USERS.alice, task.id, { title: `old ${i}` });
        await new Promise((resolve) => setTimeout(resolve, 5));
        const cutoff = Date.now();
        await new Promise((resolve) => setTimeout(resolve, 5));
        for (let i = 1; i <= 5; i++)
          await rh.patchTask(USERS.alice, task.id, { title: `new ${i}` });
        const log = await rh.logOf([task.id]);
        expect(log).toHaveLength(10);

        const logs = r.app.get(DataSource).getRepository(ChangeLogEntry);
        const pruned = await r.app.get(ChangeLogService).prune(cutoff + DAY);
        expect(pruned).toBeGreaterThanOrEqual(5);
        expect((await rh.logOf([task.id])).map((x) => x.seq)).toEqual(
          log.slice(5).map((x) => x.seq),
        );
        const rest = await logs.find({ order: { seq: 'ASC' } });
        expect(rest.every((x) => x.createdAt >= new Date(cutoff).toISOString())).toBe(true);

        // everything older than maxAge: the newest row stays, the log's head
        await r.app.get(ChangeLogService).prune(Date.now() + 2 * DAY);
        expect((await logs.find()).map((x) => x.seq)).toEqual([log[9].seq]);
      });
    });
  });

  describe('throttle and batch', () => {
    it('throttleMs 200: 100 quick updates of one document arrive as at most one message per window, the last state included', async () => {
      const pid = await newProject();
      const task = await createTask(USERS.alice, pid, { title: 'start' });
      const c = await connect(USERS.alice);
      const sub = await c.subscribe(tasksOf(pid, { throttleMs: 200 }));
      const arrivals: number[] = [];
      c.socket.on('message', (raw) => {
        const m = JSON.parse(raw.toString());
        if (m.type === 'data_change' && m.data.subscriptionId === sub) arrivals.push(Date.now());
      });

      const start = Date.now();
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) => patchTask(USERS.alice, task.id, { title: `t${i}` })),
      );
      const writeMs = Date.now() - start;
      const finalVersion = Math.max(...results.map((x) => x.version));
      expect(finalVersion).toBe(101);
      const final = (await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`)).body;
      await waitForChange(c, sub, (x) => x.metadata.version === finalVersion);
      await settle(c);

      const frames = framesOf(c, sub);
      expect(frames).toHaveLength(arrivals.length);
      // one document: each window coalesces to its latest state
      for (const frame of frames) expect(frame.data.changes).toHaveLength(1);
      for (let i = 1; i < arrivals.length; i++) {
        expect(arrivals[i] - arrivals[i - 1]).toBeGreaterThanOrEqual(200 - 25);
      }
      expect(frames.length).toBeLessThanOrEqual(Math.ceil(writeMs / 200) + 2);
      expect(frames.length).toBeLessThan(100);
      const versions = c.changes(sub).map((x) => x.metadata.version);
      expectIncreasing(versions);
      expect(c.changes(sub).at(-1).document).toEqual(final);
    });

    it('batchSize caps the changes per message, live and in a replay', async () => {
      const pid = await newProject();
      const c = await connect(USERS.alice);
      const sub = await c.subscribe(tasksOf(pid, { batchSize: 3 }));
      const runner = t.app.get(TransactionRunner);
      await runner.transaction(async (m) => {
        for (let i = 0; i < 7; i++) await m.getRepository(Task).save(draft(m, pid, `batch ${i}`));
      });
      const live = (await c.waitChanges(sub, 7)).slice();
      const sizes = framesOf(c, sub).map((m) => m.data.changes.length);
      expect(Math.max(...sizes)).toBe(3);
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(7);

      const replay = await c.subscribe(tasksOf(pid, { batchSize: 3 }), {
        resumeFrom: String(Number(live[0].seq) - 1),
      });
      await c.waitChanges(replay, 7);
      expect(framesOf(c, replay).map((m) => m.data.changes.length)).toEqual([3, 3, 1]);
      expect(seqs(c.changes(replay))).toEqual(seqs(live));
    });
  });

  describe('invalid queries, forbidden and revocation', () => {
    const many = (n: number) =>
      Array.from({ length: n }, () => ({
        type: 'field',
        field: 'priority',
        operator: 'gte',
        value: 1,
      }));
    const invalid: [string, Record<string, unknown>, string[]][] = [
      ['query not an object', { query: 'tasks' }, ['']],
      ['no collection', { query: {} }, ['collection']],
      ['unknown collection', { query: { collection: 'nope' } }, ['collection']],
      ['unknown key', { query: { collection: 'tasks', bogus: 1 } }, ['bogus']],
      ['unknown database', { query: { collection: 'tasks', database: 'other' } }, ['database']],
      [
        'bad resourceType',
        { query: { collection: 'tasks', resourceType: 'table' } },
        ['resourceType'],
      ],
      [
        'document without id',
        { query: { collection: 'tasks', resourceType: 'document' } },
        ['documentId'],
      ],
      ['batchSize 0', { query: { collection: 'tasks', batchSize: 0 } }, ['batchSize']],
      ['batchSize 1001', { query: { collection: 'tasks', batchSize: 1001 } }, ['batchSize']],
      ['batchSize text', { query: { collection: 'tasks', batchSize: 'ten' } }, ['batchSize']],
      ['throttleMs -1', { query: { collection: 'tasks', throttleMs: -1 } }, ['throttleMs']],
      ['throttleMs 60001', { query: { collection: 'tasks', throttleMs: 60_001 } }, ['throttleMs']],
      [
        'includeInitialData text',
        { query: { collection: 'tasks', includeInitialData: 'yes' } },
        ['includeInitialData'],
      ],
      [
        'fieldPath __proto__',
        { query: { collection: 'tasks', fieldPath: '__proto__' } },
        ['fieldPath'],
      ],
      [
        'fieldPath below a scalar',
        { query: { collection: 'tasks', fieldPath: 'title.length' } },
        ['fieldPath'],
      ],
      ['unknown fieldPath', { query: { collection: 'tasks', fieldPath: 'nope' } }, ['fieldPath']],
      ['filters not an array', { query: { collection: 'tasks', filters: {} } }, ['filters']],
      ['21 filters', { query: { collection: 'tasks', filters: many(21) } }, ['filters']],
      [
        'unknown filter type',
        { query: { collection: 'tasks', filters: [{ type: 'sql', where: '1=1' }] } },
        ['filters.0.type'],
      ],
      [
        'unknown field',
        {
          query: {
            collection: 'tasks',
            filters: [{ type: 'field', field: 'nope', operator: 'eq', value: 1 }],
          },
        },
        ['filters.0.field'],
      ],
      [
        'constructor field',
        {
          query: {
            collection: 'tasks',
            filters: [{ type: 'field', field: 'constructor', operator: 'eq', value: 1 }],
          },
        },
        ['filters.0.field'],
      ],
      [
        'unknown operator',
        {
          query: {
            collection: 'tasks',
            filters: [{ type: 'field', field: 'title', operator: 'like', value: 'a' }],
          },
        },
        ['filters.0.operator'],
      ],
      [
        'operator for another kind',
        {
          query: {
            collection: 'tasks',
            filters: [{ type: 'field', field: 'priority', operator: 'contains', value: 1 }],
          },
        },
        ['filters.0.operator'],
      ],
      [
        'wrong value type',
        {
          query: {
            collection: 'tasks',
            filters: [{ type: 'field', field: 'priority', operator: 'gt', value: 'high' }],
          },
        },
        ['filters.0.value'],
      ],
      [
        'in without array',
        {
          query: {
            collection: 'tasks',
            filters: [{ type: 'field', field: 'status', operator: 'in', value: 'todo' }],
          },
        },
        ['filters.0.value'],
      ],
      [
        'in with 1001 values',
        {
          query: {
            collection: 'tasks',
            filters: [
              { type: 'field', field: 'status', operator: 'in', value: Array(1001).fill('todo') },
            ],
          },
        },
        ['filters.0.value'],
      ],
      [
        'exists not boolean',
        {
          query: {
            collection: 'tasks',
            filters: [{ type: 'field', field: 'title', operator: 'exists', value: 'yes' }],
          },
        },
        ['filters.0.value'],
      ],
      [
        'caseSensitive not boolean',
        {
          query: {
            collection: 'tasks',
            filters: [
              { type: 'field', field: 'title', operator: 'eq', value: 'a', caseSensitive: 'no' },
            ],
          },
        },
        ['filters.0.caseSensitive'],
      ],
      [
        'unknown custom filter',
        { query: { collection: 'tasks', filters: [{ type: 'custom', name: 'nope' }] } },
        ['filters.0.name'],
      ],
      [
        'user filter on a date',
        { query: { collection: 'tasks', filters: [{ type: 'user', field: 'dueAt' }] } },
        ['filters.0.field'],
      ],
      [
        'several problems at once',
        {
          query: {
            collection: 'tasks',
            batchSize: 0,
            throttleMs: -1,
            filters: [{ type: 'field', field: 'nope', operator: 'eq', value: 1 }],
          },
        },
        ['batchSize', 'throttleMs', 'filters.0.field'],
      ],
      [
        'resumeFrom not a seq',
        { query: { collection: 'tasks' }, resumeFrom: 'yesterday' },
        ['resumeFrom'],
      ],
      ['unknown subscribe key', { query: { collection: 'tasks' }, bogus: true }, ['bogus']],
      ['no query', {}, ['query']],
    ];

    it('every class of invalid query gets invalid_query with the paths; the connection stays up', async () => {
      const c = await connect(USERS.alice);
      for (const [name, data, paths] of invalid) {
        const reply = await c.request('subscribe', data);
        expect([name, reply.type, reply.data.code]).toEqual([name, 'error', 'invalid_query']);
        const got = (reply.data.details as { path: string; message: string }[]).map((d) => d.path);
        expect([name, got]).toEqual([name, expect.arrayContaining(paths)]);
        for (const d of reply.data.details) expect(typeof d.message).toBe('string');
      }
      expect(c.closed).toBeUndefined();
      expect((await c.request('get_subscriptions')).data.subscriptions).toEqual([]);
      expect((await c.request('ping')).type).toBe('pong');
    });

    it('forbidden: a member filtering or watching budget; a user who may not read tasks', async () => {
      const pid = await newProject();
      const carol = await connect(USERS.carol);
      const budgetFilter = { type: 'field', field: 'budget', operator: 'gt', value: 100 };
      for (const data of [
        { query: tasksOf(pid, {}, [budgetFilter]) },
        { query: tasksOf(pid, { fieldPath: 'budget' }) },
      ]) {
        const reply = await carol.request('subscribe', data);
        expect(reply).toMatchObject({ type: 'error', data: { code: 'forbidden' } });
        expect(reply.data.message).toMatch(/budget/);
      }
      const nobody = await connect({ sub: 'nobody', roles: [], attrs: {} });
      const refused = await nobody.request('subscribe', { query: { collection: 'tasks' } });
      expect(refused).toMatchObject({ type: 'error', data: { code: 'forbidden' } });
      // a manager may
      const bob = await connect(USERS.bob);
      const ok = await bob.subscribe(tasksOf(pid, { fieldPath: 'budget' }, [budgetFilter]));
      await createTask(USERS.alice, pid, { budget: 150 });
      const [added] = await bob.waitChanges(ok, 1);
      expect(added.document.budget).toBe(150);
    });

    it('a refreshed token whose roles no longer allow reading ends the subscription: subscription_ended revoked', async () => {
      const pid = await newProject();
      const carol = await connect(USERS.carol);
      const bob = await connect(USERS.bob);
      const sub = await carol.subscribe(tasksOf(pid));
      const watch = await bob.subscribe(tasksOf(pid));
      const task = await createTask(USERS.alice, pid);
      await carol.waitChanges(sub, 1);

      // a refresh with the same rights keeps the subscription
      const same = await carol.request('auth', { token: t.token(USERS.carol) });
      expect(same.type).toBe('auth_ok');
      const listed = await carol.request('get_subscriptions');
      expect(listed.data.subscriptions.map((x: Doc) => x.subscriptionId)).toEqual([sub]);
      expect(carol.messages.some((m) => m.type === 'subscription_ended')).toBe(false);
      const demoted = await carol.request('auth', {
        token: t.token({ sub: 'carol', roles: [], attrs: {} }),
      });
      expect(demoted.type).toBe('auth_ok');
      const ended = await carol.next(
        (m) => m.type === 'subscription_ended' && m.data.subscriptionId === sub,
      );
      expect(ended.data).toEqual({ subscriptionId: sub, reason: 'revoked' });
      expect(
        carol.messages.filter(
          (m) => m.type === 'subscription_ended' && m.data.subscriptionId === sub,
        ),
      ).toHaveLength(1);

      await patchTask(USERS.alice, task.id, { title: 'after revocation' });
      await waitForChange(bob, watch, (x) => x.document?.title === 'after revocation');
      await settle(carol);
      expect(carol.changes(sub)).toHaveLength(1);
      expect((await carol.request('get_subscriptions')).data.subscriptions).toEqual([]);
      expect(carol.closed).toBeUndefined();
      // subscribing again is now refused
      const again = await carol.request('subscribe', { query: tasksOf(pid) });
      expect(again.data.code).toBe('forbidden');
    });
  });

  describe('audit and metrics', () => {
    it('audit: subscription_created, subscription_creation_failed, subscription_ended, subscription_revoked', async () => {
      const pid = await newProject();
      const c = await connect(USERS.carol);
      const { data: hello } = await c.next((m) => m.type === 'connection_established');
      const created = await c.subscribe(tasksOf(pid));
      const failed = await c.request('subscribe', { query: { collection: 'nope' } });
      expect(failed.data.code).toBe('invalid_query');
      const unsubscribed = await c.request('unsubscribe', { subscriptionId: created });
      expect(unsubscribed).toMatchObject({
        type: 'unsubscribed',
        data: { subscriptionId: created },
      });
      const revoked = await c.subscribe(tasksOf(pid));
      await c.request('auth', { token: t.token({ sub: 'carol', roles: [], attrs: {} }) });
      await c.next((m) => m.type === 'subscription_ended' && m.data.subscriptionId === revoked);

      await t.app.get(AuditService).flush();
      const r = await t.api(
        USERS.alice,
        'GET',
        `/admin/audit-logs?connectionId=${hello.connectionId}`,
      );
      expect(r.status).toBe(200);
      const rows = (r.body.items as Doc[]).slice().reverse();
      const line = (x: Doc) => [x.action, x.subscriptionId, x.outcome, x.userId];
      expect(rows.filter((x) => x.action.startsWith('subscription_')).map(line)).toEqual([
        ['subscription_created', created, 'success', 'carol'],
        ['subscription_creation_failed', null, 'failure', 'carol'],
        ['subscription_ended', created, 'success', 'carol'],
        ['subscription_created', revoked, 'success', 'carol'],
        ['subscription_revoked', revoked, 'success', 'carol'],
      ]);
      const failure = rows.find((x) => x.action === 'subscription_creation_failed')!;
      expect(failure.details).toMatchObject({
        code: 'invalid_query',
        query: { collection: 'nope' },
      });
      expect(rows.find((x) => x.action === 'subscription_ended')!.details).toMatchObject({
        reason: 'unsubscribed',
      });
      expect(rows.find((x) => x.action === 'subscription_revoked')!.details).toMatchObject({
        reason: 'revoked',
      });
      const byAction = await t.api(
        USERS.alice,
        'GET',
        `/admin/audit-logs?action=subscription_revoked&subscriptionId=${revoked}`,
      );
      expect(byAction.body.items).toHaveLength(1);
    });

    it('/metrics: changes, deliveries, subscriptions and delivery latency', async () => {
      const scrape = async () => {
        const r = await t.api(USERS.alice, 'GET', '/metrics');
        expect(r.status).toBe(200);
        expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
        return r.body as string;
      };
      const pid = await newProject();
      const before = await scrape();
      const c = await connect(USERS.alice);
      const a = await c.subscribe(tasksOf(pid));
      const b = await c.subscribe(tasksOf(pid, { includeMetadata: false }));
      const during = await scrape();
      expect(sample(during, 'realtime_subscriptions')).toBe(
        sample(before, 'realtime_subscriptions') + 2,
      );

      await createTask(USERS.alice, pid);
      await Promise.all([c.waitChanges(a, 1), c.waitChanges(b, 1)]);
      expect(c.changes(b)[0]).not.toHaveProperty('metadata');
      const after = await scrape();
      expect(sample(after, 'realtime_changes_total')).toBe(
        sample(before, 'realtime_changes_total') + 1,
      );
      expect(sample(after, 'realtime_deliveries_total')).toBe(
        sample(before, 'realtime_deliveries_total') + 2,
      );
      const count = sample(after, 'realtime_delivery_latency_seconds_count');
      const sum = sample(after, 'realtime_delivery_latency_seconds_sum');
      expect(count).toBe(sample(before, 'realtime_delivery_latency_seconds_count') + 1);
      expect(sum / count).toBeGreaterThanOrEqual(0);
      expect(sum / count).toBeLessThan(1);
      expect(after).toMatch(/^realtime_delivery_latency_seconds_bucket\{le="\+Inf"\} \d+$/m);

      c.close();
      await c.waitClose();
      // the server releases the connection when its socket closes
      let now = await scrape();
      for (
        let i = 0;
        i < 50 &&
        sample(now, 'realtime_subscriptions') !== sample(before, 'realtime_subscriptions');
        i++
      ) {
        await new Promise((r) => setTimeout(r, 20));
        now = await scrape();
      }
      expect(sample(now, 'realtime_subscriptions')).toBe(sample(before, 'realtime_subscriptions'));
    });
  });
});

describe('engine: concurrent writers [postgres]', () => {
  let t: TestApp;
  const h = helpers(() => t);
  const { connect, newProject, createTask, patchTask, listAll, logOf, draft } = h;
  const { queriesDuring, saveInOneTransaction, oneConnection } = h;

  beforeAll(async () => {
    t = await startTestApp('postgres');
  });
  afterEach(() => h.closeAll());
  afterAll(() => t?.close());

  it('10 writers, 520 REST writes: every subscriber sees every change once, in seq = commit order; a resumed subscriber misses nothing', async () => {
    const pid = await newProject();
    const watchers = await Promise.all(
      [USERS.alice, USERS.bob, USERS.carol].map((u) => connect(u)),
    );
    const subs = await Promise.all(watchers.map((w) => w.subscribe(tasksOf(pid))));
    const resumer = await connect(USERS.bob);
    const resumerSub = await resumer.subscribe(tasksOf(pid));
    const docs: string[] = [];
    const responses: [string, number][] = [];
    for (let i = 0; i < 8; i++) {
      const doc = await createTask(USERS.alice, pid, { title: `doc ${i}`, budget: i });
      docs.push(doc.id);
      responses.push([doc.id, doc.version]);
    }

    const WRITERS = 10;
    const PER_WRITER = 52;
    let done = 0;
    let resumeFrom: string | undefined;
    // every write changes something (a write that changes nothing is not a change)
    const patches = [
      (w: number, i: number) => ({ title: `w${w}.${i}` }),
      (w: number, i: number) => ({ priority: 1 + ((w * i) % 5), title: `p${w}.${i}` }),
      (w: number, i: number) => ({
        status: ['todo', 'doing', 'done'][(w + i) % 3],
        title: `s${w}.${i}`,
      }),
      (w: number, i: number) => ({ tags: [`w${w}`, `i${i}`] }),
      (w: number, i: number) => ({
        assigneeId: ['carol', 'bob', null][(w * i) % 3],
        title: `a${w}.${i}`,
      }),
      (w: number, i: number) => ({ budget: w * 100 + i }),
    ];
    const writer = async (w: number) => {
      const user = w % 2 ? USERS.bob : USERS.alice;
      for (let i = 0; i < PER_WRITER; i++) {
        if (i % 13 === 0) {
          const doc = await createTask(user, pid, { title: `new ${w}.${i}` });
          docs.push(doc.id);
          responses.push([doc.id, doc.version]);
        } else {
          const id = docs[(w * 7 + i * 13) % docs.length];
          const saved = await patchTask(user, id, patches[(w + i) % patches.length](w, i));
          responses.push([id, saved.version]);
        }
        if (++done === (WRITERS * PER_WRITER) / 2) {
          // mid-way: the resumer's connection drops; it remembers the last seq it saw
          resumeFrom = resumer.changes(resumerSub).at(-1)?.seq ?? '0';
          resumer.close();
        }
      }
    };
    await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
    expect(responses).toHaveLength(8 + WRITERS * PER_WRITER);

    const log = await logOf(docs);
    expect(log).toHaveLength(responses.length);
    await Promise.all(watchers.map((w, i) => w.waitChanges(subs[i], log.length, 30_000)));
    await settle(...watchers);

    const logSeqs = log.map((r) => r.seq);
    const byResponse = responses.map(([id, v]) => `${id}@${v}`).sort();
    for (const [i, w] of watchers.entries()) {
      const got = w.changes(subs[i]);
      // once each, in increasing seq, exactly the change log's order
      expect(seqs(got)).toEqual(logSeqs);
      expect(got.map((x) => [x.documentId, x.metadata.version])).toEqual(
        log.map((r) => [r.documentId, r.version]),
      );
      // every REST write is there once, with the version its response reported
      expect(got.map((x) => `${x.documentId}@${x.metadata.version}`).sort()).toEqual(byResponse);
      // per document the versions follow seq order: seq order is commit order
      const versions = new Map<string, number>();
      for (const x of got) {
        expect([x.documentId, x.metadata.version]).toEqual([
          x.documentId,
          (versions.get(x.documentId) ?? 0) + 1,
        ]);
        expect(x.document.version).toBe(x.metadata.version);
        versions.set(x.documentId, x.metadata.version);
      }
    }
    // applied in order, each stream ends where the database is
    for (const [i, user] of [USERS.alice, USERS.bob, USERS.carol].entries()) {
      const rest = await listAll(user, pid);
      expect(apply(new Map(), watchers[i].changes(subs[i]))).toEqual(
        new Map(rest.map((x) => [x.id, x])),
      );
    }

    // the resumer comes back and misses no seq
    expect(Number(resumeFrom)).toBeGreaterThan(0);
    const back = await connect(USERS.bob);
    const backSub = await back.subscribe(tasksOf(pid), { resumeFrom });
    const missed = logSeqs.filter((s) => s > Number(resumeFrom));
    expect(missed.length).toBeGreaterThan(100);
    await back.waitChanges(backSub, missed.length, 30_000);
    await settle(back);
    expect(seqs(back.changes(backSub))).toEqual(missed);
    const before = resumer.changes(resumerSub).filter((x) => Number(x.seq) <= Number(resumeFrom));
    expect(seqs([...before, ...back.changes(backSub)])).toEqual(logSeqs);
  });

  /** Resolves once a session of the app's database waits for a lock (or `stop.done`). */
  async function lockWaiter(stop = { done: false }): Promise<void> {
    const dataSource = t.app.get(DataSource);
    while (!stop.done) {
      const [row] = await dataSource.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'`,
      );
      if (row.n > 0) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Starts a transaction that runs `body`, then waits for `release()` before committing. */
  function heldTransaction(body: (m: EntityManager) => Promise<unknown>) {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let ready!: () => void;
    const written = new Promise<void>((resolve) => (ready = resolve));
    const done = t.app.get(TransactionRunner).transaction(async (m) => {
      await body(m);
      ready();
      await gate;
    });
    return { written, release, done };
  }

  /**
   * Once `held` has written the task (not committed), saves priority 5 in another
   * transaction that loads the row as it was ('original'), releases `held` when that save
   * waits for the row lock, and returns the task as committed.
   */
  async function savePriorityBehind(
    held: ReturnType<typeof heldTransaction>,
    taskId: string,
  ): Promise<Doc> {
    await held.written;
    const save = t.app.get(TransactionRunner).transaction(async (m) => {
      const row = await m.getRepository(Task).findOneByOrFail({ id: taskId });
      expect(row.title).toBe('original');
      row.priority = 5;
      await m.getRepository(Task).save(row);
    });
    await lockWaiter();
    held.release();
    await Promise.all([held.done, save]);
    return (await t.api(USERS.alice, 'GET', `/api/tasks/${taskId}`)).body;
  }

  it('seq order is commit order: a transaction that wrote first but commits last gets the later seq', async () => {
    const pid = await newProject();
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    const save = (m: EntityManager, title: string) =>
      m.getRepository(Task).save(draft(m, pid, title));

    const slow = heldTransaction(async (m) => {
      await m
        .transaction(async (inner) => {
          await save(inner, 'discarded');
          throw new Error('inner');
        })
        .catch(() => undefined);
      await save(m, 'slow');
    });
    await slow.written;
    await t.app.get(TransactionRunner).transaction((m) => save(m, 'fast'));
    const [fast] = (await c.waitChanges(sub, 1)).slice();
    slow.release();
    await slow.done;

    await c.waitChanges(sub, 2);
    await settle(c);
    expect(fast.document.title).toBe('fast');
    expect(c.changes(sub).map((x) => x.document.title)).toEqual(['fast', 'slow']);
    expectIncreasing(seqs(c.changes(sub)));
    const log = await logOf(c.changes(sub).map((x) => x.documentId));
    expect(log.map((r) => r.after?.title)).toEqual(['fast', 'slow']);
  });

  it('a transaction held at its COMMIT by another listener has not drawn a seq yet: the next writer commits meanwhile, with the earlier seq', async () => {
    const pid = await newProject();
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    const runner = t.app.get(TransactionRunner);
    const dataSource = t.app.get(DataSource);
    const save = (m: EntityManager, title: string) =>
      m.getRepository(Task).save(draft(m, pid, title));

    // holds one transaction at its COMMIT (TypeORM sends COMMIT once every
    // beforeTransactionCommit listener is done; change capture's log row goes with it)
    let held: QueryRunner | undefined;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const holding = new Promise<void>((resolve) => (entered = resolve));
    const holder: EntitySubscriberInterface = {
      beforeTransactionCommit: (event) => {
        if (event.queryRunner !== held) return undefined;
        entered();
        return gate;
      },
    };
    dataSource.subscribers.push(holder);
    let outcome: string;
    try {
      const slow = runner.transaction(async (m) => {
        held = m.queryRunner;
        await save(m, 'slow');
      });
      await holding;
      const fast = runner.transaction((m) => save(m, 'fast'));
      const stop = { done: false };
      outcome = await Promise.race([
        fast.then(() => 'fast committed first'),
        lockWaiter(stop).then(() => 'fast waits'),
      ]);
      stop.done = true;
      release();
      await Promise.all([slow, fast]);
    } finally {
      release();
      dataSource.subscribers.splice(dataSource.subscribers.indexOf(holder), 1);
    }

    await c.waitChanges(sub, 2);
    await settle(c);
    // both arrive, in seq order, which is the order they committed in
    // the held one holds no seq lock: nothing waits for it
    expect(outcome).toBe('fast committed first');
    expect(c.changes(sub).map((x) => x.document.title)).toEqual(['fast', 'slow']);
    expectIncreasing(seqs(c.changes(sub)));
  });

  it('a COMMIT that fails (a deferred constraint) takes its change log rows with it: nothing delivered, QueryFailedError, the next write is fine', async () => {
    const dataSource = t.app.get(DataSource);
    await dataSource.query(`
      CREATE OR REPLACE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.title = 'refused at commit' THEN RAISE EXCEPTION 'refused at commit'; END IF;
        RETURN NULL;
      END $$`);
    await dataSource.query(`
      CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT OR UPDATE ON tasks
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()`);
    try {
      const pid = await newProject();
      const c = await connect(USERS.alice);
      const sub = await c.subscribe(tasksOf(pid));
      const before = await dataSource.query('SELECT MAX(seq)::int AS head FROM change_log');
      const runner = t.app.get(TransactionRunner);
      const failed = await runner
        .transaction(async (m) => {
          await m.getRepository(Task).save(draft(m, pid, 'fine in the same transaction'));
          await m.getRepository(Task).save(draft(m, pid, 'refused at commit'));
        })
        .catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(QueryFailedError);
      expect((failed as Error).message).toContain('refused at commit');
      const after = await dataSource.query('SELECT MAX(seq)::int AS head FROM change_log');
      expect(after[0].head).toBe(before[0].head);
      expect(await listAll(USERS.alice, pid)).toEqual([]);

      const ok = await createTask(USERS.alice, pid, { title: 'next' });
      const [change] = await c.waitChanges(sub, 1);
      await settle(c);
      expect(c.changes(sub)).toHaveLength(1);
      expect(change.documentId).toBe(ok.id);
    } finally {
      await dataSource.query('DROP TRIGGER refuse_at_commit ON tasks');
      await dataSource.query('DROP FUNCTION refuse_at_commit()');
    }
  });

  it('quotes, backslashes and other awkward text reach the change log and the subscribers intact (the log INSERT is sent as literals with the COMMIT)', async () => {
    const pid = await newProject();
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    const titles = [
      `it's`,
      String.raw`back\slash \' \\ \n`,
      `$$ dollar $tag$ ; COMMIT; -- not a comment`,
      `"quoted" E'x' U&'d' é 漢字 😀`,
    ];
    const created: string[] = [];
    for (const title of titles) created.push((await createTask(USERS.alice, pid, { title })).id);
    await c.waitChanges(sub, titles.length);
    await settle(c);
    expect(c.changes(sub).map((x) => x.document.title)).toEqual(titles);
    const log = await logOf(created);
    expect(log.map((r) => r.after?.title)).toEqual(titles);
  });

  it('a transaction whose log rows exceed one message (16 MB of SQL) is logged row by row before its COMMIT, and delivered', async () => {
    const pid = await newProject();
    const c = await connect(USERS.alice);
    // only the small last task matches: the big ones are not sent to the test client
    const sub = await c.subscribe(
      tasksOf(pid, {}, [{ type: 'field', field: 'title', operator: 'eq', value: 'last' }]),
    );
    // tags go through the entity, not the REST schema: 36 tasks of ~0.5 MB each
    const tags = Array.from({ length: 10_000 }, (_, i) => `tag-${i}-${'x'.repeat(40)}`);
    const ids: string[] = [];
    await t.app.get(TransactionRunner).transaction(async (m) => {
      for (let i = 0; i < 36; i++) {
        ids.push((await m.getRepository(Task).save({ ...draft(m, pid, `big ${i}`), tags })).id);
      }
      ids.push((await m.getRepository(Task).save(draft(m, pid, 'last'))).id);
    });
    const [last] = await c.waitChanges(sub, 1, 30_000);
    await settle(c);
    expect(last.documentId).toBe(ids[36]);
    const log = await logOf(ids);
    expect(log.map((r) => r.documentId)).toEqual(ids);
    expect(log.slice(0, 36).every((r) => (r.after?.tags as string[]).length === tags.length)).toBe(
      true,
    );
    expectIncreasing(log.map((r) => r.seq));
    expect(String(log[36].seq)).toBe(last.seq);
  });

  it('a query runner used for several transactions logs and delivers each once', async () => {
    const pid = await newProject();
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    const qr = t.app.get(DataSource).createQueryRunner();
    try {
      for (const title of ['first', 'second', 'third']) {
        await qr.startTransaction();
        await qr.manager.getRepository(Task).save(draft(qr.manager, pid, title));
        if (title === 'second') await qr.rollbackTransaction();
        else await qr.commitTransaction();
      }
    } finally {
      await qr.release();
    }
    await c.waitChanges(sub, 2);
    await settle(c);
    expect(c.changes(sub).map((x) => x.document.title)).toEqual(['first', 'third']);
    const log = await logOf(c.changes(sub).map((x) => x.documentId));
    expect(log.map((r) => String(r.seq))).toEqual(c.changes(sub).map((x) => x.seq));
  });

  it('an update of a versioned row sends no re-read FOR UPDATE and no INSERT of its own: the log row goes with the COMMIT', async () => {
    const pid = await newProject();
    const task = await createTask(USERS.alice, pid, { title: 'counted' });
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    const dataSource = t.app.get(DataSource);
    const seen: string[] = [];
    let watched: QueryRunner | undefined;
    const counter: EntitySubscriberInterface = {
      beforeQuery: (event) => {
        if (event.queryRunner === watched) seen.push(event.query.replace(/\s+/g, ' ').slice(0, 40));
      },
    };
    dataSource.subscribers.push(counter);
    try {
      await t.app.get(TransactionRunner).transaction(async (m) => {
        watched = m.queryRunner;
        const row = await m.getRepository(Task).findOneByOrFail({ id: task.id });
        row.title = 'counted again';
        await m.getRepository(Task).save(row);
      });
    } finally {
      dataSource.subscribers.splice(dataSource.subscribers.indexOf(counter), 1);
    }
    const [change] = await c.waitChanges(sub, 1);
    expect(change).toMatchObject({ changedFields: ['title'], document: { version: 2 } });
    expect(seen.some((q) => /FOR UPDATE/.test(q))).toBe(false);
    expect(seen.some((q) => /INSERT INTO "change_log"|seq_lock/.test(q))).toBe(false);
    expect(seen.filter((q) => /^UPDATE "tasks"/.test(q))).toHaveLength(1);
    const [logged] = await logOf([task.id]).then((rows) => rows.slice(-1));
    expect(logged).toMatchObject({ version: 2, before: { title: 'counted', version: 1 } });
  });

  it('two objects of one row saved together: the second UPDATE starts from the first, whose image comes from the same transaction', async () => {
    const pid = await newProject();
    const task = await createTask(USERS.alice, pid, { title: 'original', priority: 1 });
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    await t.app.get(TransactionRunner).transaction(async (m) => {
      const repo = m.getRepository(Task);
      const a = await repo.findOneByOrFail({ id: task.id });
      const b = await repo.findOneByOrFail({ id: task.id });
      a.title = 'by a';
      b.priority = 5;
      b.title = 'by b';
      await repo.save([a, b]);
    });
    const changes = await c.waitChanges(sub, 2);
    await settle(c);
    expect(changes.map((x) => x.metadata.version)).toEqual([2, 3]);
    const log = (await logOf([task.id])).slice(-2);
    expect(log[0]).toMatchObject({ before: { title: 'original', version: 1 } });
    // the second's before-image is the first's after-image, not the row as loaded
    expect(log[1]).toMatchObject({
      before: { title: 'by a', priority: 1, version: 2 },
      after: { title: 'by b', priority: 5, version: 3 },
    });
    expect(log[1].changedFields).toEqual(['title', 'priority']);
  });

  it('a save racing a write that bypassed capture (raw SQL) still publishes the row as it committed', async () => {
    const pid = await newProject();
    const task = await createTask(USERS.alice, pid, { title: 'original', priority: 1 });
    const c = await connect(USERS.alice);
    const all = await c.subscribe(tasksOf(pid));

    // raw SQL is not captured: the change log never hears of this version
    const raw = heldTransaction((m) =>
      m.query(`UPDATE tasks SET title = 'raw', version = version + 1 WHERE id = $1`, [task.id]),
    );
    const final = await savePriorityBehind(raw, task.id);
    expect(final).toMatchObject({ title: 'raw', priority: 5, version: 3 });
    const [change] = await c.waitChanges(all, 1);
    await settle(c);
    expect(c.changes(all)).toHaveLength(1);
    // the document is the committed row; of the before-image only the columns this save
    // wrote are as it loaded them (the raw write's image is nowhere to be read)
    expect(change.document).toEqual(final);
    expect(change.changedFields).toEqual(['priority']);
    const [logged] = (await logOf([task.id])).slice(-1);
    expect(logged.before).toMatchObject({ title: 'raw', priority: 1 });
  });

  it('a save that loaded the row before another writer committed publishes the row as it committed', async () => {
    const pid = await newProject();
    const task = await createTask(USERS.alice, pid, { title: 'original', priority: 1 });
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(
      tasksOf(pid, {}, [{ type: 'field', field: 'title', operator: 'eq', value: 'first' }]),
    );
    const all = await c.subscribe(tasksOf(pid));

    const first = heldTransaction(async (m) => {
      const row = await m.getRepository(Task).findOneByOrFail({ id: task.id });
      row.title = 'first';
      await m.getRepository(Task).save(row);
    });
    const final = await savePriorityBehind(first, task.id);
    expect(final).toMatchObject({ title: 'first', priority: 5, version: 3 });
    const [v2, v3] = await c.waitChanges(all, 2);
    expect(v2).toMatchObject({
      changedFields: ['title'],
      document: { title: 'first', version: 2 },
    });
    expect(v3.changedFields).toEqual(['priority']);
    expect(v3.document).toEqual(final);
    // for a subscriber of `title = first` the second write is a modification, not an entry
    await settle(c);
    expect(c.changes(sub).map((x) => `${x.event} v${x.metadata.version}`)).toEqual([
      'added v2',
      'modified v3',
    ]);
  });

  it('a transaction of up to 32 changes logs each by one EXECUTE of the prepared log INSERT, sent with the COMMIT; a larger one by multi-row INSERTs; seqs follow the order of the saves', async () => {
    const pid = await newProject();
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    const titlesOf = (n: number, prefix: string) =>
      Array.from({ length: n }, (_, i) => `${prefix} ${i}`);
    const small = titlesOf(5, 'small');
    const large = titlesOf(40, 'large');
    const ids: string[] = [];
    const logged = await queriesDuring(async () => {
      ids.push(...(await saveInOneTransaction(pid, small)));
      ids.push(...(await saveInOneTransaction(pid, large)));
    });
    const commits = logged.filter(
      (q) => q.endsWith('; COMMIT') && ids.some((id) => q.includes(id)),
    );
    expect(commits).toHaveLength(2);
    expect(commits[0].match(/EXECUTE nest_realtime_change_log_v1\(/g)).toHaveLength(5);
    expect(commits[0]).not.toContain('seq_lock');
    expect(commits[1]).not.toContain('EXECUTE');
    expect(commits[1].match(/INSERT INTO "change_log"/g)).toHaveLength(1);

    const got = await c.waitChanges(sub, 45);
    await settle(c);
    expect(got.map((x) => x.document.title)).toEqual([...small, ...large]);
    const log = await logOf(ids);
    expect(log.map((r) => r.documentId)).toEqual(ids);
    expect(log.map((r) => String(r.seq))).toEqual(got.map((x) => x.seq));
  });

  it('a connection that lost the prepared log INSERT (DEALLOCATE ALL): that transaction fails and delivers nothing; the next one on the connection prepares it again', async () => {
    const pid = await newProject();
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    let third: string[] = [];
    await oneConnection(pid, async (tx) => {
      expect(await tx('first')).toBeUndefined();
      const failed = await tx('lost', 'DEALLOCATE ALL');
      expect(failed).toBeInstanceOf(QueryFailedError);
      expect((failed as Error).message).toContain('nest_realtime_change_log_v1');
      third = await queriesDuring(async () => expect(await tx('third')).toBeUndefined());
    });
    // the third transaction looked for the statement, prepared it, then used it
    const steps = [
      'FROM pg_prepared_statements',
      'PREPARE nest_realtime_change_log_v1 (',
      'EXECUTE nest_realtime_change_log_v1(',
    ].map((step) => third.findIndex((q) => q.includes(step)));
    expect(steps.every((i) => i >= 0)).toBe(true);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));

    await c.waitChanges(sub, 2);
    await settle(c);
    expect(c.changes(sub).map((x) => x.document.title)).toEqual(['first', 'third']);
    expect((await listAll(USERS.alice, pid)).map((x) => x.title).sort()).toEqual([
      'first',
      'third',
    ]);
    const log = await logOf(c.changes(sub).map((x) => x.documentId));
    expect(log.map((r) => String(r.seq))).toEqual(c.changes(sub).map((x) => x.seq));
  });
});

describe('engine: the prepared log INSERT replaces a stale or foreign statement [postgres]', () => {
  let t: TestApp;
  const h = helpers(() => t);
  const { connect, newProject, logOf, queriesDuring, oneConnection, draft } = h;

  beforeAll(async () => {
    t = await startTestApp('postgres');
  });
  afterEach(() => h.closeAll());
  afterAll(() => t?.close());

  // first in this app: no connection has logged a transaction yet
  it("a session that already has a statement of that name, not this process's (another instance's, another definition): it is replaced and the write commits", async () => {
    const pid = randomUUID();
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    const qr = t.app.get(DataSource).createQueryRunner();
    let logged: string[] = [];
    try {
      await qr.startTransaction();
      await qr.query('PREPARE nest_realtime_change_log_v1 AS SELECT 1');
      await qr.manager
        .getRepository(Project)
        .save({ id: pid, name: 'p', ownerId: 'alice', department: 'eng' });
      await qr.manager.getRepository(Task).save(draft(qr.manager, pid, 'replaced'));
      logged = await queriesDuring(() => qr.commitTransaction());
    } finally {
      await qr.release();
    }
    expect(logged).toContain('DEALLOCATE nest_realtime_change_log_v1');
    const [change] = await c.waitChanges(sub, 1);
    expect(change.document.title).toBe('replaced');
    const log = await logOf([change.documentId]);
    expect(String(log[0].seq)).toBe(change.seq);
  });

  it("change_log altered under the running app (seq made integer, as the bigint migration's down does): the transaction meeting the stale plan fails and delivers nothing; the next one prepares again", async () => {
    const pid = await newProject();
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    await oneConnection(pid, async (tx) => {
      expect(await tx('first')).toBeUndefined();
      await t.app.get(DataSource).query('ALTER TABLE change_log ALTER COLUMN seq TYPE integer');
      const failed = await tx('stale');
      expect(failed).toBeInstanceOf(QueryFailedError);
      expect((failed as Error).message).toContain('cached plan must not change result type');
      expect(await tx('third')).toBeUndefined();
    });
    await c.waitChanges(sub, 2);
    await settle(c);
    expect(c.changes(sub).map((x) => x.document.title)).toEqual(['first', 'third']);
    const log = await logOf(c.changes(sub).map((x) => x.documentId));
    expect(log.map((r) => String(r.seq))).toEqual(c.changes(sub).map((x) => x.seq));
  });
});

describe('engine: statements that keep going missing turn the prepared log INSERT off [postgres]', () => {
  let t: TestApp;
  const h = helpers(() => t);
  const { connect, newProject, queriesDuring, oneConnection } = h;

  beforeAll(async () => {
    t = await startTestApp('postgres');
  });
  afterEach(() => h.closeAll());
  afterAll(() => t?.close());

  it('after the second lost statement (as behind a transaction pooler) the process sends literal INSERTs; every committed write is delivered once', async () => {
    const pid = await newProject();
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    let last: string[] = [];
    await oneConnection(pid, async (tx) => {
      expect(await tx('first')).toBeUndefined();
      expect(await tx('lost once', 'DEALLOCATE ALL')).toBeInstanceOf(QueryFailedError);
      expect(await tx('third')).toBeUndefined();
      expect(await tx('lost twice', 'DEALLOCATE ALL')).toBeInstanceOf(QueryFailedError);
      last = await queriesDuring(async () => expect(await tx('fifth')).toBeUndefined());
    });
    const commit = last.filter((q) => q.endsWith('; COMMIT'));
    expect(commit).toHaveLength(1);
    expect(commit[0]).toContain('seq_lock');
    expect(last.some((q) => /PREPARE|EXECUTE/.test(q))).toBe(false);
    await c.waitChanges(sub, 3);
    await settle(c);
    expect(c.changes(sub).map((x) => x.document.title)).toEqual(['first', 'third', 'fifth']);
  });
});

describe('engine: change log INSERT not prepared (CHANGE_LOG_PREPARED=false) [postgres]', () => {
  let t: TestApp;
  const h = helpers(() => t);
  const { connect, newProject, createTask, logOf, queriesDuring, saveInOneTransaction } = h;

  beforeAll(async () => {
    t = await startTestApp('postgres', { CHANGE_LOG_PREPARED: 'false' });
  });
  afterEach(() => h.closeAll());
  afterAll(() => t?.close());

  it('writes send their log rows as a literal INSERT with the COMMIT, never PREPARE or EXECUTE, and are logged and delivered in order', async () => {
    const pid = await newProject();
    const c = await connect(USERS.alice);
    const sub = await c.subscribe(tasksOf(pid));
    const ids: string[] = [];
    const logged = await queriesDuring(async () => {
      ids.push(...(await saveInOneTransaction(pid, ['a', 'b', 'c'])));
      ids.push((await createTask(USERS.alice, pid, { title: `it's d` })).id);
    });
    const commits = logged.filter(
      (q) => q.endsWith('; COMMIT') && ids.some((id) => q.includes(id)),
    );
    expect(commits).toHaveLength(2);
    expect(commits.every((q) => q.includes('seq_lock'))).toBe(true);
    expect(logged.some((q) => /PREPARE|EXECUTE/.test(q))).toBe(false);
    const got = await c.waitChanges(sub, 4);
    await settle(c);
    expect(got.map((x) => x.document.title)).toEqual(['a', 'b', 'c', `it's d`]);
    const log = await logOf(ids);
    expect(log.map((r) => r.documentId)).toEqual(ids);
    expect(log.map((r) => String(r.seq))).toEqual(got.map((x) => x.seq));
  });
});
