import Database from 'better-sqlite3';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DataSource } from 'typeorm';
import { SqliteCheckpointer, threadNice } from '@app/realtime';
import { seedTask, startTestApp, TestApp, USERS } from './utils/app';
import { WsClient } from './utils/ws-client';

/**
 * The title of a task as the database FILE holds it, without its WAL (a copy of the file
 * alone). A copy taken while a checkpoint writes the file may be torn: undefined then.
 */
function titleInFile(file: string, id: string): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'rt-ckpt-'));
  try {
    copyFileSync(file, join(dir, 'copy.sqlite'));
    const db = new Database(join(dir, 'copy.sqlite'), { readonly: true });
    try {
      // without a checkpoint even the schema may be only in the WAL
      if (!db.prepare(`SELECT 1 FROM sqlite_master WHERE name = 'tasks'`).get()) return undefined;
      const row = db.prepare('SELECT title FROM tasks WHERE id = ?').get(id) as
        { title: string } | undefined;
      return row?.title;
    } finally {
      db.close();
    }
  } catch {
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function until(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const fileOf = (t: TestApp) => t.app.get(DataSource).options.database as string;

/**
 * Inserts a random blob of `bytes` into the table `scratch` every `pauseMs` for `ms`, by
 * raw SQL on the app's connection (a heavy writer, or with small blobs a trickle); returns
 * the seconds it took.
 */
async function writeBlobs(
  ds: DataSource,
  bytes: number,
  ms: number,
  pauseMs = 50,
): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < ms) {
    await ds.query(`INSERT INTO scratch (body) VALUES (randomblob(${bytes}))`);
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
  return (Date.now() - started) / 1000;
}

/** Writes 30 changes to one task through the REST API, seen by a live subscriber. */
async function thirtyWrites(t: TestApp, id: string): Promise<string> {
  const c = await WsClient.open(t.ws, t.token(USERS.alice));
  try {
    const sub = await c.subscribe({ collection: 'tasks', documentId: id });
    let title = '';
    for (let i = 0; i < 30; i++) {
      title = `write ${i} ${Math.random()}`;
      const r = await t.api(USERS.alice, 'PATCH', `/api/tasks/${id}`, { title });
      expect(r.status).toBe(200);
    }
    await c.waitChanges(sub, 30);
    return title;
  } finally {
    c.close();
  }
}

describe('SQLite checkpoints in a worker thread', () => {
  let t: TestApp;
  let open: TestApp | undefined;
  const start = async (env?: Record<string, string>) =>
    (open = t = await startTestApp('sqlite', env));
  afterEach(async () => {
    await open?.close();
    open = undefined;
  });

  it('by default: committed changes reach the database file within moments, not only its WAL; the main connection checkpoints itself only past 4 000 pages', async () => {
    await start();
    const checkpointer = t.app.get(SqliteCheckpointer);
    expect(checkpointer.running).toBe(true);
    expect(await t.app.get(DataSource).query('PRAGMA wal_autocheckpoint')).toEqual([
      { wal_autocheckpoint: 4000 },
    ]);
    const task = await seedTask(t, { title: 'first' });
    const last = await thirtyWrites(t, task.id);
    await until(() => titleInFile(fileOf(t), task.id) === last, 'the file to hold the last write');
    expect(checkpointer.runs).toBeGreaterThan(0);
    expect(checkpointer.last?.checkpointed).toBe(checkpointer.last?.walFrames);
  });

  it('after a quiet spell (the worker then looks once a second) the next commit still reaches the file', async () => {
    await start();
    const checkpointer = t.app.get(SqliteCheckpointer);
    const task = await seedTask(t, { title: 'first' });
    await until(() => titleInFile(fileOf(t), task.id) === 'first', 'the seeded task in the file');
    // a PASSIVE checkpoint may leave frames a reader still needed; the worker retries them
    await until(
      () =>
        checkpointer.last !== undefined &&
        checkpointer.last.checkpointed === checkpointer.last.walFrames,
      'a checkpoint that copied everything',
    );
    // its report of that checkpoint may still be on its way: wait until the count holds
    let runs = -1;
    while (runs !== checkpointer.runs) {
      runs = checkpointer.runs;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    // well past IDLE_MS + QUIET_MS: the worker has checkpointed and slowed down
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(checkpointer.runs).toBe(runs); // nothing committed, nothing to copy
    // quiet: one look a second, so at most 4 in 3 s (one of slack for timing), not 6 or 30
    const looks = checkpointer.looks;
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect(checkpointer.looks - looks).toBeGreaterThanOrEqual(2);
    expect(checkpointer.looks - looks).toBeLessThanOrEqual(4);
    const r = await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, { title: 'after' });
    expect(r.status).toBe(200);
    // the file first, the worker's report of the checkpoint after it
    await until(
      () => checkpointer.runs > runs && titleInFile(fileOf(t), task.id) === 'after',
      'the write after the quiet spell, in the file and reported',
    );
  });

  it('a trickle of commits (one per 100 ms, a few WAL pages each) is checkpointed every 2 s, not every 500 ms: the worker wakes about once a second; the file keeps up', async () => {
    await start();
    const checkpointer = t.app.get(SqliteCheckpointer);
    const task = await seedTask(t, { title: 'first' });
    await until(() => titleInFile(fileOf(t), task.id) === 'first', 'the seeded task in the file');
    const [looks, runs] = [checkpointer.looks, checkpointer.runs];
    const started = Date.now();
    let title = '';
    for (let i = 0; i < 50; i++) {
      title = `trickle ${i}`;
      const r = await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, { title });
      expect(r.status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const seconds = (Date.now() - started) / 1000;
    // about 5.5 s: a checkpoint every 2 s is 2 to 4 (seen: 2), where every 500 ms made
    // 11; a look a second and one per checkpoint (seen: 5), where every 500 ms made 11
    const ran = checkpointer.runs - runs;
    expect(ran).toBeGreaterThanOrEqual(1); // along the way, not only once the commits stop
    expect(ran).toBeLessThanOrEqual(Math.ceil(seconds / 2) + 2);
    expect(checkpointer.looks - looks).toBeLessThanOrEqual(Math.ceil(seconds) + 3);
    // and it copied everything it found each time: the file is at most 2 s behind
    await until(() => titleInFile(fileOf(t), task.id) === title, 'the last write in the file');
  });

  it('a heavy writer (about 150 WAL pages per commit, 20 commits a second) is checkpointed every 500 ms', async () => {
    await start();
    const checkpointer = t.app.get(SqliteCheckpointer);
    const ds = t.app.get(DataSource);
    await ds.query('CREATE TABLE scratch (body BLOB)');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const runs = checkpointer.runs;
    const seconds = await writeBlobs(ds, 600_000, 4000);
    // about 3 000 pages a second: the WAL reaches 1 000 pages within the 500 ms. After the
    // quiet spell the worker looks once a second, so the first commits wait up to 1 s: 7
    // in 4 s (seen: 7), where one every 2 s would make 2 or 3
    expect(checkpointer.runs - runs).toBeGreaterThanOrEqual(Math.floor(seconds * 2) - 3);
  });

  it("a heavy writer after a trickle is checkpointed every 500 ms again, also where the main connection's own checkpoint (at 4 000 pages) restarted the WAL in between", async () => {
    await start();
    const checkpointer = t.app.get(SqliteCheckpointer);
    const ds = t.app.get(DataSource);
    await ds.query('CREATE TABLE scratch (body BLOB)');
    // a trickle first: the worker stretches its interval to 2 s
    await writeBlobs(ds, 100, 3000, 100);
    const runs = checkpointer.runs;
    await writeBlobs(ds, 450_000, 6000);
    // about 2 200 pages a second: a worker that did not notice the main connection's
    // checkpoint (at 4 000 pages, restarting the WAL) would count only the frames since,
    // and stretch its interval again (seen: 6 checkpoints in 6 s, every run, before the
    // worker looked at the file's mtime; 9 after)
    expect(checkpointer.runs - runs).toBeGreaterThanOrEqual(7);
  });

  it('a reader that pins the WAL slows the worker to one try a second; once it ends, the rest reaches the file', async () => {
    await start();
    const checkpointer = t.app.get(SqliteCheckpointer);
    const task = await seedTask(t, { title: 'before the reader' });
    await until(
      () => titleInFile(fileOf(t), task.id) === 'before the reader',
      'the seeded task in the file',
    );
    // a read transaction of another connection, open across the next commit: its snapshot
    // keeps that commit's frames out of the file until it ends
    const reader = new Database(fileOf(t), { readonly: true });
    try {
      reader.prepare('BEGIN').run();
      reader.prepare('SELECT count(*) FROM tasks').get();
      const r = await t.api(USERS.alice, 'PATCH', `/api/tasks/${task.id}`, { title: 'pinned' });
      expect(r.status).toBe(200);
      // the worker tries (within 2 s: it may have stretched its interval after the seed's
      // checkpoint), copies what it can, and finds the rest pinned
      await until(
        () =>
          checkpointer.last !== undefined &&
          checkpointer.last.checkpointed < checkpointer.last.walFrames,
        'a checkpoint that found the last commit pinned',
      );
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const runs = checkpointer.runs;
      await new Promise((resolve) => setTimeout(resolve, 3000));
      // one try a second (not ten): at most 3 in 3 s, with one of slack for timing
      expect(checkpointer.runs - runs).toBeLessThanOrEqual(4);
      expect(titleInFile(fileOf(t), task.id)).toBe('before the reader');
      reader.prepare('COMMIT').run();
    } finally {
      reader.close();
    }
    await until(
      () =>
        titleInFile(fileOf(t), task.id) === 'pinned' &&
        checkpointer.last!.checkpointed === checkpointer.last!.walFrames,
      'the pinned write in the file once the reader ended',
    );
  });

  it("SQLITE_CHECKPOINT_NICE=19: on Linux the worker's thread runs at nice 19 and yields the core to the event loop, whose thread keeps its own; by default it runs at the process's", async () => {
    const own = threadNice(process.pid);
    await start({ SQLITE_CHECKPOINT_NICE: '19' });
    const checkpointer = t.app.get(SqliteCheckpointer);
    if (process.platform !== 'linux') {
      expect(checkpointer.threadId).toBe(0);
      return;
    }
    await until(() => checkpointer.threadId !== 0, 'the worker to tell its thread id');
    expect(checkpointer.threadId).not.toBe(process.pid);
    expect(threadNice(checkpointer.threadId)).toBe(19);
    expect(threadNice(process.pid)).toBe(own);
    await open?.close();
    await start();
    const plain = t.app.get(SqliteCheckpointer);
    await until(() => plain.threadId !== 0, 'the second worker to tell its thread id');
    expect(threadNice(plain.threadId)).toBe(own);
  });

  it("SQLITE_CHECKPOINT_MS=0: no worker; SQLite's own checkpoint every 1 000 pages, so 30 writes stay in the WAL", async () => {
    await start({ SQLITE_CHECKPOINT_MS: '0' });
    expect(t.app.get(SqliteCheckpointer).running).toBe(false);
    expect(await t.app.get(DataSource).query('PRAGMA wal_autocheckpoint')).toEqual([
      { wal_autocheckpoint: 1000 },
    ]);
    const task = await seedTask(t, { title: 'first' });
    const last = await thirtyWrites(t, task.id);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(titleInFile(fileOf(t), task.id)).not.toBe(last);
    // the data is committed all the same: the app reads it (through the WAL)
    const read = await t.api(USERS.alice, 'GET', `/api/tasks/${task.id}`);
    expect(read.body.title).toBe(last);
  });

  it('closing the app closes the worker connection too: the file alone holds everything, no WAL left', async () => {
    const app = await startTestApp('sqlite');
    const file = fileOf(app);
    try {
      const task = await seedTask(app, { title: 'first' });
      const last = await thirtyWrites(app, task.id);
      await app.app.close();
      // SQLite deletes the WAL when the LAST connection to the file closes
      expect(existsSync(`${file}-wal`)).toBe(false);
      expect(titleInFile(file, task.id)).toBe(last);
    } finally {
      rmSync(dirname(file), { recursive: true, force: true });
    }
  });
});
