import {
  Inject,
  Injectable,
  Logger,
  OnApplicationBootstrap,
  OnApplicationShutdown,
} from '@nestjs/common';
import { performance } from 'node:perf_hooks';
import { CHANGE_BUS } from '../realtime.constants';
import type { ChangeRecord } from '../realtime.types';
import type { ChangeBus } from './change-bus';
import { ChangeLogService } from './change-log.service';

export type ChangeHandler = (changes: ChangeRecord[]) => void;

/**
 * Turns whatever the bus delivers into the exact committed sequence: every seq once, in
 * order. Changes that arrive ahead of the next expected seq wait for the rest of the
 * event-loop turn (the missing ones' messages are usually right behind), then while the
 * missing range is read from the change log. Because seqs are drawn under a lock held
 * until commit, a committed change with seq M proves every smaller seq is already
 * committed or rolled back, so the log read is final and nothing waits longer than one
 * turn and one query. A periodic poll of the log's head catches the last changes of a
 * burst whose bus messages were lost.
 */
@Injectable()
export class ChangeFeedService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(ChangeFeedService.name);
  private readonly handlers: ChangeHandler[] = [];
  /** greatest seq delivered to the handlers */
  private position = 0;
  private readonly pending = new Map<number, ChangeRecord>();
  /** in order, waiting for this turn's dispatch */
  private queued: ChangeRecord[] = [];
  /** a dispatch is scheduled or running, or its frames have not all left yet */
  private busy = false;
  /** when the last dispatch's frames had all been handed over (performance.now()) */
  private lastSettled = -Infinity;
  private dispatchedUpTo = 0;
  private filling = false;
  /** a drain waits for the end of this event-loop turn (setImmediate) */
  private drainScheduled = false;
  private poller?: NodeJS.Timeout;
  private started = false;
  /** how often the log head is polled for changes that no bus message announced */
  pollIntervalMs = 1000;
  /** how long after a dispatch the feed counts as busy, and batches to the turn's end (emit) */
  quietMs = 5;

  constructor(
    @Inject(CHANGE_BUS) private readonly bus: ChangeBus,
    private readonly log: ChangeLogService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    this.position = await this.log.head();
    this.dispatchedUpTo = this.position;
    this.started = true;
    this.bus.subscribe((changes) => this.accept(changes));
    this.bus.onResync(() => void this.catchUp());
    this.poller = setInterval(() => void this.catchUp(), this.pollIntervalMs);
    this.poller.unref();
  }

  onApplicationShutdown(): void {
    clearInterval(this.poller);
  }

  /** The greatest seq handed to the handlers so far. */
  get delivered(): number {
    return this.dispatchedUpTo;
  }

  onChanges(handler: ChangeHandler): void {
    this.handlers.push(handler);
  }

  accept(changes: ChangeRecord[]): void {
    if (!this.started) return;
    const ready: ChangeRecord[] = [];
    for (const change of changes) {
      const seq = Number(change.seq);
      if (seq <= this.position) continue; // seen already
      if (!this.filling && this.pending.size === 0 && seq === this.position + 1) {
        ready.push(change);
        this.position = seq;
      } else {
        this.pending.set(seq, change);
      }
    }
    if (ready.length) this.emit(ready);
    if (this.pending.size && !this.drainScheduled) {
      // the missing commits' own messages are usually a moment behind (concurrent COMMITs
      // are acknowledged, and published, in whatever order their sockets are read): give
      // the rest of this event-loop turn's input a chance before reading the log
      this.drainScheduled = true;
      setImmediate(this.scheduledDrain);
    }
  }

  private readonly scheduledDrain = (): void => {
    this.drainScheduled = false;
    if (this.pending.size) void this.drain(0);
  };

  /** Reads anything committed beyond our position (bus reconnect, poll). */
  async catchUp(): Promise<void> {
    if (!this.started || this.filling) return;
    try {
      const head = await this.log.head();
      if (head > this.position) await this.drain(head);
    } catch (e) {
      this.logger.warn(`change log poll failed: ${(e as Error).message}`);
    }
  }

  private async drain(knownHead: number): Promise<void> {
    if (this.filling) return;
    this.filling = true;
    try {
      for (;;) {
        const ready: ChangeRecord[] = [];
        let next = this.pending.get(this.position + 1);
        while (next) {
          this.pending.delete(this.position + 1);
          this.position++;
          ready.push(next);
          next = this.pending.get(this.position + 1);
        }
        if (ready.length) this.emit(ready);
        let target = 0;
        if (this.pending.size) {
          target = Infinity;
          for (const seq of this.pending.keys()) if (seq < target) target = seq;
        } else if (knownHead > this.position) target = knownHead + 1;
        if (target === 0) break;
        // a gap below `target`: whatever of it was committed is in the log by now
        const missing = await this.log.range(this.position, target);
        const found = missing.filter((c) => Number(c.seq) > this.position);
        this.position = Math.max(this.position, target - 1);
        for (const seq of this.pending.keys()) if (seq <= this.position) this.pending.delete(seq);
        if (found.length) this.emit(found);
      }
    } catch (e) {
      this.logger.error(`change log gap fill failed, retrying: ${(e as Error).message}`);
      setTimeout(() => void this.drain(knownHead), 100).unref();
    } finally {
      this.filling = false;
    }
  }

  /**
   * Queues changes for the handlers.
   *
   * - On a quiet feed (no dispatch for `quietMs`, counted from when its frames had all
   *   left), a change goes to the handlers at once: in a microtask after the commit that
   *   made it ready, before the writer's continuation builds its HTTP response, as a
   *   hand-written server broadcasts and then answers.
   * - Otherwise it waits for the end of the event-loop turn (setImmediate) with everything
   *   else that becomes ready meanwhile. Commits that land together (a burst, which the
   *   first change's fan-out keeps waiting in the socket buffers) reach each subscriber as
   *   one frame instead of one frame each: one syscall per client instead of many.
   *
   * Order holds either way: nothing is handed over while earlier changes wait in the queue.
   */
  private emit(changes: ChangeRecord[]): void {
    if (this.queued.length === 0) {
      const quiet = !this.busy && performance.now() - this.lastSettled >= this.quietMs;
      this.busy = true;
      if (quiet) queueMicrotask(this.dispatchQueued);
      else setImmediate(this.dispatchQueued);
    }
    for (const change of changes) this.queued.push(change);
  }

  /**
   * After a dispatch: a tick later, when the frame writer has handed this dispatch's frames
   * to the kernel (its flush is a nextTick queued during the dispatch, so it runs first).
   */
  private readonly settled = (): void => {
    this.lastSettled = performance.now();
    this.busy = this.queued.length > 0;
  };

  private readonly dispatchQueued = (): void => {
    const changes = this.queued;
    this.queued = [];
    try {
      if (changes.length > 0) {
        this.dispatchedUpTo = Number(changes[changes.length - 1].seq);
        for (const handler of this.handlers) {
          try {
            handler(changes);
          } catch (e) {
            this.logger.error(`change delivery failed: ${(e as Error)?.stack ?? String(e)}`);
          }
        }
      }
    } finally {
      // queued after the handlers, so after any flush they queued
      process.nextTick(this.settled);
    }
  };
}
