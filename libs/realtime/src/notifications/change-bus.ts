import type { ChangeRecord } from '../realtime.types';

/**
 * Carries committed changes from the node that made them to every node (itself included).
 * The one seam users may swap: the default is in-process; `REDIS_URL` selects Redis
 * pub/sub. A bus may lose, reorder or repeat messages: the change feed restores order and
 * fills gaps from the change log, so a bus only has to be fast.
 */
export interface ChangeBus {
  publish(changes: ChangeRecord[]): void;
  /** `handler` receives every published batch, from this node and from the others */
  subscribe(handler: (changes: ChangeRecord[]) => void): void;
  /** `handler` runs when the bus has (re)connected after losing messages */
  onResync(handler: () => void): void;
  /** for `/health`: null when healthy, else why not */
  health(): Promise<string | null>;
}
