import type { AnyAbility } from '@casl/ability';
import type { ServerResponse } from 'node:http';
import type { Principal, ServerEventType } from '../realtime.types';
import type { EmitOptions } from '../subscriptions/subscription-sink';
import { Connection } from './connection';

/**
 * A Server-Sent Events stream, written to the raw response to see back-pressure.
 *
 * `Last-Event-ID` resumes every subscription of the stream from one seq, so an `id:` is
 * only written where resuming from it loses nothing and repeats nothing: events written in
 * one tick go out together, and the last `data_change` among them carries as `id:` the
 * greatest seq up to which every subscription of the stream has been sent all it owes
 * (nothing left in a throttle window, no replay in progress) — usually the seq of its own
 * last change — and only when that point has advanced since the last id.
 */
export class SseConnection extends Connection {
  readonly transport = 'sse' as const;
  /** greatest id written; ids only grow */
  private lastId = 0;
  /** greatest seq of a change written on this stream */
  private sentUpTo = 0;
  private batch: { type: ServerEventType; data: string; eventId?: string }[] = [];
  /** the seq up to which every subscription of this stream has been sent all it owes */
  safeId: () => number = () => Number.MAX_SAFE_INTEGER;

  constructor(
    private readonly res: ServerResponse,
    principal: Principal,
    ability: AnyAbility,
    remote: { ip: string | null; userAgent: string | null },
    private readonly onOverflow: (connection: SseConnection) => void,
    private readonly maxBufferedBytes: number,
  ) {
    super(principal, ability, remote);
  }

  emitRaw(type: ServerEventType, dataJson: string, options?: EmitOptions): void {
    if (!this.open) return;
    if (this.batch.length === 0) process.nextTick(this.flush);
    this.batch.push({ type, data: dataJson, eventId: options?.eventId });
  }

  private readonly flush = (): void => {
    const batch = this.batch;
    this.batch = [];
    if (!this.open || batch.length === 0) return;
    let last = -1;
    for (let i = batch.length - 1; i >= 0; i--) {
      const eventId = batch[i].eventId;
      if (eventId === undefined) continue;
      if (last === -1) last = i;
      this.sentUpTo = Math.max(this.sentUpTo, Number(eventId));
    }
    // resuming every subscription from `safe` loses nothing: write it when it advances
    const safe = Math.min(this.sentUpTo, this.safeId());
    let idFor = -1;
    if (last !== -1 && safe > this.lastId) {
      idFor = last;
      this.lastId = safe;
    }
    let text = '';
    for (let i = 0; i < batch.length; i++) {
      const { type, data } = batch[i];
      text += `event: ${type}\n${i === idFor ? `id: ${this.lastId}\n` : ''}data: ${data}\n\n`;
    }
    // a slow consumer is one whose backlog was over the limit before this write; the write
    // itself does not count (one event larger than the limit would close it every time),
    // nor does a heartbeat: one due while a large event is still being read would close a
    // stream that reads as fast as it can (as a WebSocket ping never does)
    const backlog = this.res.writableLength;
    this.res.write(text);
    if (backlog > this.maxBufferedBytes && batch.some((e) => e.type !== 'heartbeat')) {
      this.onOverflow(this);
    }
  };

  close(): void {
    if (!this.open) return;
    this.flush(); // what was queued this tick (e.g. subscription_ended) goes out first
    this.open = false;
    this.res.end();
  }

  terminate(): void {
    this.open = false;
    this.res.destroy();
  }

  /** An SSE stream is closed once `end()` was called: nothing to wait for. */
  closed(): Promise<void> {
    return Promise.resolve();
  }

  heartbeat(): void {
    this.emitRaw('heartbeat', `{"timestamp":"${new Date().toISOString()}"}`);
  }

  bufferedBytes(): number {
    return this.res.writableLength;
  }
}
