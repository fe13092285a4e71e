import { Injectable } from '@nestjs/common';
import type { ChangeRecord } from '../realtime.types';
import type { ChangeBus } from './change-bus';

/** The default bus: one process, nothing to lose. Delivery is synchronous with publish. */
@Injectable()
export class InProcessChangeBus implements ChangeBus {
  private readonly handlers: ((changes: ChangeRecord[]) => void)[] = [];

  publish(changes: ChangeRecord[]): void {
    for (const handler of this.handlers) handler(changes);
  }

  subscribe(handler: (changes: ChangeRecord[]) => void): void {
    this.handlers.push(handler);
  }

  onResync(): void {
    // nothing is ever lost in process
  }

  async health(): Promise<string | null> {
    return null;
  }
}
