import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { Worker } from 'node:worker_threads';
import { InjectRealtimeOptions } from '../realtime.module-definition';
import type { RealtimeModuleOptions } from '../realtime.options';
import { sqliteHandle } from '../common/sqlite-handle';
import { LOWER_OWN_PRIORITY_SOURCE } from '../common/thread-priority';

/** What the worker reports after each checkpoint it runs. */
export interface CheckpointReport {
  /** frames in the WAL when it ran */
  walFrames: number;
  /** of which now copied into the database file */
  checkpointed: number;
}

/**
 * The worker's report, an Int32Array on shared memory: [REPORT_SEQ] twice the checkpoints
 * it ran (odd while it writes the next report), then that checkpoint's CheckpointReport,
 * then how many times it has looked for commits, then its thread's id (Linux; 0 elsewhere).
 */
const REPORT_SEQ = 0;
const REPORT_WAL_FRAMES = 1;
const REPORT_CHECKPOINTED = 2;
const REPORT_LOOKS = 3;
const REPORT_TID = 4;
const REPORT_SLOTS = 5;

/**
 * The worker: its own connection to the same file. Every `intervalMs` it asks
 * `PRAGMA data_version`, which changes when another connection has committed (no I/O, no
 * lock held). While commits keep coming it checkpoints every `busyMs`, or less often, up to
 * every `maxBusyMs`, when the WAL grows slowly: from the frames the last checkpoint found
 * added since the one before it, the next is due when about `busyFrames` more have come
 * (a checkpoint costs its fsyncs and a thread switch whether it copies 8 pages or 800).
 * Where that count is not known (another connection's checkpoint ran meanwhile, seen by
 * the database file's mtime and size: the main connection's own at 4 000 pages, which may
 * restart the WAL; or the window began after a quiet spell or at boot) the next is due in
 * `busyMs`, and that window is measured instead. While commits wait for a
 * checkpoint not yet due it does not look (it would only see more commits). Once commits
 * stop, a last time, `idleMs` after the last one seen or when the next was due, whichever
 * is later, so that the database file itself is current. After `quietMs`
 * without a commit, with nothing left to copy, it asks only every `quietMs`: an idle
 * server's worker wakes once a second, not ten times (each wake is a thread switch). The
 * first commit after a quiet spell is seen at the next look and checkpointed then. A
 * checkpoint that copies nothing more than the last one while no commit comes (a reader's
 * open transaction pins the rest of the WAL) is retried every `quietMs` until the reader
 * ends; one that finds the checkpoint lock taken (`busy`) leaves everything waiting for
 * the next due time.
 * It reports each checkpoint in shared memory (`workerData.report`, see REPORT_SEQ), not by
 * message: a message would wake the event loop, and on a virtual machine a wake-up of an
 * idle thread costs tens of microseconds of CPU. Errors, which are rare, go by message.
 * PASSIVE: it never waits for the writer and never blocks it. It opens no file of its own
 * beside its connection: closing a descriptor of a database file would drop every POSIX
 * lock this process holds on it, SQLite's included.
 * Plain JavaScript evaluated in the worker, so that it runs the same under ts-node, jest
 * and the compiled build.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
${LOWER_OWN_PRIORITY_SOURCE}
const { statSync } = require('node:fs');
const Database = require(workerData.module);
const db = new Database(workerData.file, { fileMustExist: true });
const report = new Int32Array(workerData.report);
Atomics.store(report, ${REPORT_TID}, ownTid);
const dataVersion = db.prepare('PRAGMA data_version').pluck();
let version = dataVersion.get();
// commits that landed before this first look (the app starts writing while the worker
// boots) are not seen as a change: copy whatever the WAL holds once, as after a commit
let waiting = true;
let lastCommitSeen = performance.now();
let lastCheckpoint = performance.now();
// frames copied by the last checkpoint (-1: none yet), to tell when one made no progress
let lastCopied = -1;
// the WAL's frames at the last checkpoint, whether it copied them all, and how long the
// worker now lets commits accumulate between checkpoints (busyMs to maxBusyMs)
let lastLog = 0;
let lastComplete = true;
let busyWait = workerData.busyMs;
// false until a checkpoint has measured a window of ordinary commits: the first after
// boot or after a quiet spell (its window began with no commits) keeps busyMs
let measured = false;
// the database file as the worker's last checkpoint left it (mtime and size; stat opens
// no descriptor): in WAL mode only checkpoints write it, so a change means another
// connection's checkpoint ran, and may have restarted the WAL, since the worker's own
function fileStamp() {
  try {
    const st = statSync(workerData.file, { bigint: true });
    return st.mtimeNs + ':' + st.size;
  } catch (e) {
    return '';
  }
}
let ownStamp = fileStamp();
let timer;
function look() {
  let next = workerData.intervalMs;
  Atomics.add(report, ${REPORT_LOOKS}, 1);
  try {
    const now = performance.now();
    const v = dataVersion.get();
    if (v !== version) {
      version = v;
      // the first commit after a quiet spell (all copied, and no commit for idleMs): the
      // rate before it says nothing of the next
      if (!waiting && now - lastCommitSeen >= workerData.idleMs) {
        busyWait = workerData.busyMs;
        measured = false;
      }
      waiting = true;
      lastCommitSeen = now;
    }
    if (!waiting) {
      if (now - lastCommitSeen >= workerData.quietMs) next = workerData.quietMs;
    } else if (
      // (a look may come a little early: half an interval of slack, or a busy WAL would
      // wait a whole interval more)
      now - lastCheckpoint >= busyWait - workerData.intervalMs / 2 ||
      now - lastCommitSeen >= workerData.idleMs
    ) {
      const foreign = fileStamp() !== ownStamp;
      const [row] = db.pragma('wal_checkpoint(PASSIVE)');
      const since = now - lastCheckpoint;
      lastCheckpoint = now;
      if (row.busy !== 0) {
        // another checkpoint held the lock (log = checkpointed = -1) and is copying: the
        // rest still waits, for the next due time
        waiting = true;
      } else {
        ownStamp = fileStamp();
        // frames added since the last checkpoint: the WAL grew from lastLog, or restarted
        // from frame 0 after a complete one. Not known when another connection's
        // checkpoint ran meanwhile (the main connection's own at 4 000 pages, under heavy
        // writes: it may have restarted the WAL, and the frames before that are not
        // counted), when a WAL left incomplete shrank, or for a window that began quiet:
        // then busyMs, and the next window measures again
        const grew = row.log >= lastLog && !lastComplete;
        const added = grew ? row.log - lastLog : row.log;
        busyWait =
          foreign || !measured || (!grew && !lastComplete)
            ? workerData.busyMs
            : Math.min(
                workerData.maxBusyMs,
                Math.max(workerData.busyMs, (workerData.busyFrames * since) / Math.max(added, 1)),
              );
        measured = true;
        lastLog = row.log;
        lastComplete = row.checkpointed === row.log;
        // all copied: nothing waits until the next commit; else try again when due
        waiting = row.checkpointed < row.log;
        // frames left and none copied since the last try, no commit meanwhile: a reader's
        // snapshot pins them, and it may stay open for long; look once per quietMs until
        // it ends rather than every intervalMs
        const pinned =
          waiting && row.checkpointed === lastCopied && now - lastCommitSeen >= workerData.idleMs;
        if (pinned) next = workerData.quietMs;
        // frames left behind by a commit that landed meanwhile: the next try when it is due
        else if (waiting) next = Math.max(next, busyWait);
        lastCopied = row.checkpointed;
        // a seqlock: odd while the two figures are being written, so that no reader pairs
        // one checkpoint's figure with another's
        Atomics.add(report, ${REPORT_SEQ}, 1);
        Atomics.store(report, ${REPORT_WAL_FRAMES}, row.log);
        Atomics.store(report, ${REPORT_CHECKPOINTED}, row.checkpointed);
        Atomics.add(report, ${REPORT_SEQ}, 1);
      }
    } else {
      // commits wait, the checkpoint is not yet due: look again when it is (a look
      // meanwhile could only see more commits, which change nothing until then)
      next = Math.max(workerData.intervalMs, lastCheckpoint + busyWait - now);
    }
  } catch (e) {
    parentPort.postMessage({ error: String(e && e.message) });
  }
  timer = setTimeout(look, next);
}
timer = setTimeout(look, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m === 'stop') {
    clearTimeout(timer);
    db.close();
    parentPort.close();
  }
});
`;

/** How often the worker looks for commits, unless `sqliteCheckpoint.intervalMs` says otherwise. */
const DEFAULT_CHECKPOINT_INTERVAL_MS = 500;

/** While commits keep coming, the worker checkpoints this often, at the most... */
const BUSY_MS = 500;
/** ...and this often at the least, when fewer than BUSY_FRAMES come meanwhile. */
const MAX_BUSY_MS = 2_000;
/** WAL frames (pages) a checkpoint is worth waiting for: about 4 MB. */
const BUSY_FRAMES = 1_000;
/** A quiet spell after which the worker checkpoints whatever waits. */
const IDLE_MS = 1_000;
/** Quiet, with nothing to copy: the worker looks this often (a commit waits at most this). */
const QUIET_MS = 1_000;

/**
 * The worker's nice value, unless `sqliteCheckpoint.nice` says otherwise: the process's
 * own. At 19 it yields the core to the event loop (common/thread-priority.ts), but under a
 * heavy writer on one busy core it then fell behind (5 checkpoints in 6 s where the spec
 * wants 7, once in CI) and left the copying to the main connection's own checkpoint.
 */
const DEFAULT_NICE = 0;

/** The main connection's own checkpoint, kept as a backstop: every 4 000 WAL pages. */
const BACKSTOP_PAGES = 4_000;

/**
 * Moves SQLite's WAL checkpoints off the event loop (better-sqlite3, file databases in WAL
 * mode; elsewhere it does nothing).
 *
 * A checkpoint copies the WAL into the database file and fsyncs both. SQLite runs it
 * inside the COMMIT that crosses `wal_autocheckpoint` pages, on the thread that commits:
 * the event loop, blocked for the copy and the fsyncs. The change log writes its own pages
 * beside the data's in every commit, so that threshold comes several times sooner than
 * without it. Here a worker thread with a second connection does the copying instead
 * (every 500 ms while commits come, every 2 s when fewer than 1 000 pages come meanwhile,
 * and a last time within 2 s of the last), and the main connection keeps its own checkpoint further
 * out, at 4 000 pages (about 16 MB of WAL). A worker waiting 2 s meets a sudden heavy
 * writer late: up to 2 s of its pages, past 4 000 of them the main connection's own.
 *
 * What this does not do: under a steady stream of commits the WAL is never fully copied
 * at the moment a writer starts (a commit lands while the worker copies), so SQLite does
 * not restart the WAL from the beginning until the main connection's own checkpoint at
 * 4 000 pages, which still runs on the event loop, with its fsyncs, but finds almost
 * nothing left to copy: a quarter as many in-line checkpoints as SQLite's default, each
 * cheaper. After a second without commits the worker's checkpoint completes and the WAL
 * restarts. Durability is unchanged: checkpoints, not commits, are what moved.
 */
@Injectable()
export class SqliteCheckpointer implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(SqliteCheckpointer.name);
  private worker?: Worker;
  private errorLogged = false;
  private report?: Int32Array;

  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    @InjectRealtimeOptions() private readonly options: RealtimeModuleOptions,
  ) {}

  get running(): boolean {
    return this.worker !== undefined;
  }

  /** Checkpoints the worker ran (counted as each ends; tests read it). */
  get runs(): number {
    return this.report ? Atomics.load(this.report, REPORT_SEQ) >>> 1 : 0;
  }

  /** How many times the worker has looked for commits (each look is a wake-up of its thread). */
  get looks(): number {
    return this.report ? Atomics.load(this.report, REPORT_LOOKS) : 0;
  }

  /** The worker thread's id (Linux, once it has started; 0 before, or elsewhere). */
  get threadId(): number {
    return this.report ? Atomics.load(this.report, REPORT_TID) : 0;
  }

  /** The worker's report of its last checkpoint, if it ran one. */
  get last(): CheckpointReport | undefined {
    const report = this.report;
    if (!report) return undefined;
    for (;;) {
      const seq = Atomics.load(report, REPORT_SEQ);
      if (seq === 0) return undefined;
      const walFrames = Atomics.load(report, REPORT_WAL_FRAMES);
      const checkpointed = Atomics.load(report, REPORT_CHECKPOINTED);
      // the worker was writing the next report meanwhile (odd, or moved on): read again
      if ((seq & 1) === 0 && Atomics.load(report, REPORT_SEQ) === seq) {
        return { walFrames, checkpointed };
      }
    }
  }

  onApplicationBootstrap(): void {
    const setting = this.options.sqliteCheckpoint ?? {};
    if (setting === false) return;
    const file = this.dataSource.options.database;
    const db = sqliteHandle(this.dataSource); // undefined unless better-sqlite3
    if (!db || typeof file !== 'string' || file === ':memory:' || file === '') return;
    if (db.pragma('journal_mode', { simple: true }) !== 'wal') return;
    db.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`);
    const intervalMs = Math.max(10, setting.intervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS);
    const report = new Int32Array(
      new SharedArrayBuffer(REPORT_SLOTS * Int32Array.BYTES_PER_ELEMENT),
    );
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        module: require.resolve('better-sqlite3'),
        file,
        report: report.buffer,
        intervalMs,
        busyMs: BUSY_MS,
        maxBusyMs: MAX_BUSY_MS,
        busyFrames: BUSY_FRAMES,
        idleMs: IDLE_MS,
        quietMs: Math.max(QUIET_MS, intervalMs),
        nice: Math.min(19, Math.max(0, Math.trunc(setting.nice ?? DEFAULT_NICE))),
      },
    });
    worker.unref();
    worker.on('message', (m: { error: string }) => {
      if (!this.errorLogged) this.logger.warn(`SQLite checkpoint failed: ${m.error}`);
      this.errorLogged = true;
    });
    worker.on('error', (e) => {
      this.logger.error(`SQLite checkpoint worker stopped: ${e.message}`);
      this.worker = undefined;
    });
    this.worker = worker;
    this.report = report;
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
