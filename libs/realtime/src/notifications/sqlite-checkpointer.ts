import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { Worker } from 'node:worker_threads';
import { InjectRealtimeOptions } from '../realtime.module-definition';
import type { RealtimeModuleOptions } from '../realtime.options';
import { sqliteHandle } from '../common/sqlite-handle';

/** What the worker reports after each checkpoint that copied something. */
export interface CheckpointReport {
  /** frames in the WAL when it ran */
  walFrames: number;
  /** of which now copied into the database file */
  checkpointed: number;
}

/**
 * The worker: its own connection to the same file. Every `intervalMs` it reads how far the
 * WAL is ahead of the database file from the wal-index header in the `-shm` file (mxFrame
 * at byte 16, nBackfill at byte 96, native byte order: SQLite's documented WAL-index
 * format), without touching the database. It checkpoints (PASSIVE: never waits for the
 * writer, never blocks it) once 1 000 frames wait, SQLite's own default, or once some wait
 * and no commit came for a second. A header it cannot read means: checkpoint.
 * Plain JavaScript evaluated in the worker, so that it runs the same under ts-node, jest
 * and the compiled build.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const os = require('node:os');
const Database = require(workerData.module);
const db = new Database(workerData.file, { fileMustExist: true });
const little = os.endianness() === 'LE';
const header = Buffer.alloc(100);
let shm = -1;
let lastMx = -1;
let lastChange = Date.now();
let lastCopied = -1;
function state() {
  try {
    if (shm < 0) shm = fs.openSync(workerData.file + '-shm', 'r');
    if (fs.readSync(shm, header, 0, 100, 0) < 100) return null;
    const mx = little ? header.readUInt32LE(16) : header.readUInt32BE(16);
    const backfilled = little ? header.readUInt32LE(96) : header.readUInt32BE(96);
    return { mx, waiting: mx - backfilled };
  } catch {
    return null;
  }
}
function checkpoint() {
  const [row] = db.pragma('wal_checkpoint(PASSIVE)');
  if (row.checkpointed !== lastCopied) {
    lastCopied = row.checkpointed;
    parentPort.postMessage({ walFrames: row.log, checkpointed: row.checkpointed });
  }
}
const timer = setInterval(() => {
  try {
    const now = Date.now();
    const s = state();
    if (!s) return checkpoint();
    if (s.mx !== lastMx) {
      lastMx = s.mx;
      lastChange = now;
    }
    if (s.waiting >= workerData.frames || (s.waiting > 0 && now - lastChange >= workerData.idleMs)) {
      checkpoint();
    }
  } catch (e) {
    parentPort.postMessage({ error: String(e && e.message) });
  }
}, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m === 'stop') {
    clearInterval(timer);
    if (shm >= 0) fs.closeSync(shm);
    db.close();
    parentPort.close();
  }
});
`;

/** Frames waiting in the WAL that make the worker checkpoint (SQLite's default threshold). */
const WORKER_FRAMES = 1_000;
/** A quiet spell after which the worker checkpoints whatever waits. */
const IDLE_MS = 1_000;

/** The main connection's own checkpoint, kept as a backstop: every 4 000 WAL pages. */
const BACKSTOP_PAGES = 4_000;

/**
 * Moves SQLite's WAL checkpoints off the event loop (better-sqlite3, file databases in WAL
 * mode; elsewhere it does nothing).
 *
 * A checkpoint copies the WAL into the database file and fsyncs both. SQLite runs it
 * inside the COMMIT that crosses `wal_autocheckpoint` pages, on the thread that commits:
 * the event loop, blocked for the fsyncs. The change log writes its own pages beside the
 * data's in every commit, so the threshold comes several times sooner than without it.
 * Here a worker thread with a second connection checkpoints instead, as often as SQLite
 * would (every 1 000 pages), and also after a second without commits, so the file itself
 * is current soon after a burst; it looks every `intervalMs`. The main connection keeps
 * an autocheckpoint further out (4 000 pages, about 16 MB) in case the worker falls behind
 * or stops. Durability is unchanged: the same checkpoints, the same fsyncs, on another
 * thread.
 */
@Injectable()
export class SqliteCheckpointer implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(SqliteCheckpointer.name);
  private worker?: Worker;
  private errorLogged = false;
  /** the last report of the worker (tests and metrics read it) */
  last?: CheckpointReport;
  /** checkpoints that copied something */
  runs = 0;

  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    @InjectRealtimeOptions() private readonly options: RealtimeModuleOptions,
  ) {}

  get running(): boolean {
    return this.worker !== undefined;
  }

  onApplicationBootstrap(): void {
    const setting = this.options.sqliteCheckpoint ?? {};
    if (setting === false || this.dataSource.options.type !== 'better-sqlite3') return;
    const file = this.dataSource.options.database;
    const db = sqliteHandle(this.dataSource);
    if (!db || typeof file !== 'string' || file === ':memory:' || file === '') return;
    if (db.pragma('journal_mode', { simple: true }) !== 'wal') return;
    db.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`);
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        module: require.resolve('better-sqlite3'),
        file,
        intervalMs: setting.intervalMs ?? 100,
        frames: WORKER_FRAMES,
        idleMs: IDLE_MS,
      },
    });
    worker.unref();
    worker.on('message', (m: CheckpointReport | { error: string }) => {
      if ('error' in m) {
        if (!this.errorLogged) this.logger.warn(`SQLite checkpoint failed: ${m.error}`);
        this.errorLogged = true;
        return;
      }
      this.runs++;
      this.last = m;
    });
    worker.on('error', (e) => {
      this.logger.error(`SQLite checkpoint worker stopped: ${e.message}`);
      this.worker = undefined;
    });
    this.worker = worker;
  }

  async onApplicationShutdown(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    this.worker = undefined;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage('stop');
    // a worker in the middle of a checkpoint finishes it first; do not wait forever
    const timer = setTimeout(() => void worker.terminate(), 2000);
    await exited;
    clearTimeout(timer);
  }
}
