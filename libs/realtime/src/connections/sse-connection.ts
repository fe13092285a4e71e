import type { AnyAbility } from '@casl/ability';
import type { Response } from 'express';
import type { Principal, ServerEventType } from '../realtime.types';
import type { EmitOptions } from '../subscriptions/subscription-sink';
import { Connection } from './connection';

/** A Server-Sent Events stream, written to the raw response to see back-pressure. */
export class SseConnection extends Connection {
  readonly transport = 'sse' as const;

  constructor(
    private readonly res: Response,
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
    const id = options?.eventId !== undefined ? `id: ${options.eventId}\n` : '';
    const ok = this.res.write(`event: ${type}\n${id}data: ${dataJson}\n\n`);
    if (!ok && this.res.writableLength > this.maxBufferedBytes) this.onOverflow(this);
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    this.res.end();
  }

  terminate(): void {
    this.open = false;
    this.res.destroy();
  }

  heartbeat(): void {
    this.emitRaw('heartbeat', `{"timestamp":"${new Date().toISOString()}"}`);
  }

  bufferedBytes(): number {
    return this.res.writableLength;
  }
}
