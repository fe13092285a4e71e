import type { HubMessage } from './subscription-hub';
import type {
  Doc,
  ConnectionState,
  NormalizedQuery,
  PendingWrite,
  Seq,
  TabRole,
  TransportKind,
  WriteOutcome,
} from './types';

/** Everything tabs say to each other over the BroadcastChannel. */
export type TabMessage =
  | { type: 'hello'; from: string }
  | { type: 'leader'; from: string; to?: string }
  | { type: 'bye'; from: string }
  | {
      type: 'want';
      from: string;
      key: string;
      query: NormalizedQuery;
      snapshot?: { documents: Doc[]; seq: Seq | null };
    }
  | { type: 'unwant'; from: string; key: string }
  | { type: 'hub'; from: string; message: HubMessage }
  | { type: 'state'; from: string; state: ConnectionState; transport: TransportKind | null }
  | { type: 'write-queued'; from: string; write: PendingWrite }
  | { type: 'write-settled'; from: string; write: PendingWrite; outcome: WriteOutcome };

export interface CoordinatorHandlers {
  role(role: TabRole): void;
  message(message: TabMessage): void;
}

type BroadcastChannelConstructor = new (name: string) => BroadcastChannel;

export interface CoordinatorEnvironment {
  locks?: LockManager;
  BroadcastChannelImpl?: BroadcastChannelConstructor;
}

/** How often the leader looks for tabs that died without saying goodbye. */
const TAB_SWEEP_MS = 5_000;

/**
 * Leader election with the Web Locks API: the leader is the tab holding `<name>:leader`,
 * and holds it for its whole life. The browser hands the lock to the next waiting tab the
 * moment the holder closes or crashes, so a hand-off needs no timeout or heartbeat.
 * Every tab also holds `<name>:tab:<id>`, which lets the leader see which tabs still live.
 * Without Web Locks or BroadcastChannel (Node) the client is simply its own leader.
 */
export class TabCoordinator {
  private channel: BroadcastChannel | null = null;
  private readonly abort = new AbortController();
  private releaseLeader: (() => void) | null = null;
  private releaseTab: (() => void) | null = null;
  private sweepTimer: ReturnType<typeof setInterval> | undefined;
  private current: TabRole | null = null;

  constructor(
    private readonly name: string,
    private readonly tabId: string,
    private readonly handlers: CoordinatorHandlers,
    private readonly env: CoordinatorEnvironment,
  ) {}

  /** True when other tabs can share this one's connection. */
  get shared(): boolean {
    return this.channel !== null;
  }

  get role(): TabRole | null {
    return this.current;
  }

  start(): void {
    const { locks, BroadcastChannelImpl } = this.env;
    if (!locks || !BroadcastChannelImpl) {
      queueMicrotask(() => this.become('leader'));
      return;
    }
    this.channel = new BroadcastChannelImpl(this.name);
    this.channel.onmessage = (event: MessageEvent) =>
      this.handlers.message(event.data as TabMessage);
    void locks
      .request(
        `${this.name}:tab:${this.tabId}`,
        { signal: this.abort.signal },
        () => new Promise<void>((resolve) => (this.releaseTab = resolve)),
      )
      .catch(() => undefined);
    // Ask without waiting first, so a follower knows it is one at once.
    void locks
      .request(`${this.name}:leader`, { ifAvailable: true }, (lock) => {
        if (!lock) return false;
        return this.lead();
      })
      .then((gotIt) => {
        if (gotIt !== false || this.abort.signal.aborted) return;
        this.become('follower');
        return locks.request(`${this.name}:leader`, { signal: this.abort.signal }, () =>
          this.lead(),
        );
      })
      .catch(() => undefined);
  }

  post(message: TabMessage): void {
    this.channel?.postMessage(message);
  }

  /** Ids of the tabs that are still open (leader only; all of them when unknown). */
  async liveTabs(): Promise<Set<string> | null> {
    const locks = this.env.locks;
    if (!locks) return null;
    const snapshot = await locks.query();
    const prefix = `${this.name}:tab:`;
    const ids = new Set<string>();
    for (const lock of snapshot.held ?? []) {
      if (lock.name?.startsWith(prefix)) ids.add(lock.name.slice(prefix.length));
    }
    return ids;
  }

  onSweep(sweep: () => void): void {
    clearInterval(this.sweepTimer);
    this.sweepTimer = setInterval(sweep, TAB_SWEEP_MS);
  }

  close(): void {
    clearInterval(this.sweepTimer);
    this.post({ type: 'bye', from: this.tabId });
    this.abort.abort();
    this.releaseLeader?.();
    this.releaseTab?.();
    this.channel?.close();
    this.channel = null;
  }

  private lead(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.releaseLeader = resolve;
      if (this.abort.signal.aborted) resolve();
      else this.become('leader');
    });
  }

  private become(role: TabRole): void {
    if (this.current === role) return;
    this.current = role;
    this.handlers.role(role);
  }
}
