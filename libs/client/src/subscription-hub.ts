import { LiveQueryCache } from './live-query-cache';
import { compareSeq, minSeq } from './seq';
import { RealtimeRequestError, TransportClosedError, type TransportSession } from './transport';
import type {
  Doc,
  NormalizedQuery,
  RealtimeErrorInfo,
  Seq,
  ServerMessage,
  SubscriptionStatus,
  WireChange,
} from './types';

/** What the hub tells the tabs; `key` is the query's identity. */
export type HubMessage =
  | { type: 'snapshot'; key: string; documents: Doc[]; seq: Seq | null; to?: string }
  | { type: 'changes'; key: string; changes: WireChange[] }
  | { type: 'status'; key: string; status: SubscriptionStatus; error?: RealtimeErrorInfo };

/** A tab's request for a query; `snapshot` is set when the tab already holds its result. */
export interface WantRequest {
  tabId: string;
  key: string;
  query: NormalizedQuery;
  snapshot?: { documents: Doc[]; seq: Seq | null };
}

interface Entry {
  key: string;
  query: NormalizedQuery;
  /** tabs that want this query */
  wanters: Set<string>;
  /** the browser-wide result, from which a tab that joins later gets its snapshot */
  cache: LiveQueryCache;
  /** the lowest seq a tab reported that the current server subscription may not cover */
  floor: Seq | null;
  /** where the active server subscription started (its resumeFrom), null for a snapshot */
  activeFrom: Seq | null;
  subscriptionId: string | null;
  inFlight: boolean;
  /** re-subscribe with initial data after `resync_required` of a query that had none */
  forceInitialData: boolean;
  generation: number;
}

/** Messages kept for a subscription id not yet known (its reply is still on the way). */
const MAX_ORPHANS = 10_000;

/**
 * The leader's side of every live query of the browser: one server subscription per
 * distinct query, whoever many tabs want it. It owns the reference cache, resubscribes
 * with `resumeFrom` after every reconnect, and fans each change out to the tabs, which
 * drop by seq whatever they already have.
 */
export class SubscriptionHub {
  private readonly entries = new Map<string, Entry>();
  private readonly bySubscription = new Map<string, Entry>();
  private readonly orphans = new Map<string, ServerMessage[]>();
  /** subscriptions being dropped, whose late messages are not orphans but noise */
  private readonly retired = new Set<string>();
  private orphanCount = 0;
  private session: TransportSession | null = null;

  constructor(
    private readonly tabId: string,
    private readonly emit: (message: HubMessage) => void,
  ) {}

  /** The keys of every query some tab wants (for tests and diagnostics). */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  /** Every tab that wants something. */
  tabs(): Set<string> {
    const tabs = new Set<string>();
    for (const entry of this.entries.values()) for (const tab of entry.wanters) tabs.add(tab);
    return tabs;
  }

  attach(session: TransportSession): void {
    this.session = session;
    for (const entry of this.entries.values()) this.subscribe(entry);
  }

  detach(): void {
    this.session = null;
    this.bySubscription.clear();
    this.orphans.clear();
    this.retired.clear();
    this.orphanCount = 0;
    for (const entry of this.entries.values()) {
      entry.subscriptionId = null;
      entry.inFlight = false;
      entry.generation++;
    }
  }

  want(request: WantRequest): void {
    let entry = this.entries.get(request.key);
    if (!entry) {
      entry = {
        key: request.key,
        query: request.query,
        wanters: new Set(),
        cache: new LiveQueryCache(),
        floor: null,
        activeFrom: null,
        subscriptionId: null,
        inFlight: false,
        forceInitialData: false,
        generation: 0,
      };
      this.entries.set(request.key, entry);
    }
    entry.wanters.add(request.tabId);
    const idle = !entry.subscriptionId && !entry.inFlight;
    const { snapshot } = request;
    if (snapshot) {
      // A tab that kept its result across a leader hand-off seeds the new leader's cache.
      if (!entry.cache.ready && idle) entry.cache.loadSnapshot(snapshot.documents, snapshot.seq);
      if (snapshot.seq !== null) entry.floor = minSeq(entry.floor, snapshot.seq);
    } else if (entry.cache.ready) {
      this.emit({
        type: 'snapshot',
        key: entry.key,
        documents: entry.cache.documents(),
        seq: entry.cache.lastSeq,
        to: request.tabId,
      });
    }
    if (!this.session) return;
    if (idle) this.subscribe(entry);
    else if (
      entry.floor !== null &&
      entry.activeFrom !== null &&
      compareSeq(entry.floor, entry.activeFrom) < 0
    ) {
      // A tab is behind where the server subscription started: open one that reaches
      // back far enough, then drop the old one; the overlap is discarded by seq.
      this.subscribe(entry);
    }
  }

  unwant(tabId: string, key: string): void {
    const entry = this.entries.get(key);
    if (!entry || !entry.wanters.delete(tabId) || entry.wanters.size > 0) return;
    this.entries.delete(key);
    entry.generation++;
    if (entry.subscriptionId) this.retire(entry.subscriptionId);
  }

  /** A tab closed (or crashed): forget everything it wanted. */
  dropTab(tabId: string): void {
    for (const entry of [...this.entries.values()]) this.unwant(tabId, entry.key);
  }

  handle(message: ServerMessage): void {
    const subscriptionId =
      message.data && 'subscriptionId' in message.data ? message.data.subscriptionId : undefined;
    if (subscriptionId === undefined || message.type === 'subscription_created') return;
    const entry = this.bySubscription.get(subscriptionId);
    if (!entry) {
      if (message.type === 'unsubscribed') this.retired.delete(subscriptionId);
      else if (!this.retired.has(subscriptionId)) this.keepOrphan(subscriptionId, message);
      return;
    }
    switch (message.type) {
      case 'initial_data':
        if (entry.cache.applyInitialChunk(message.data)) {
          this.emit({
            type: 'snapshot',
            key: entry.key,
            documents: entry.cache.documents(),
            seq: entry.cache.lastSeq,
          });
        }
        break;
      case 'data_change':
        entry.cache.applyChanges(message.data.changes);
        // Forward everything, not only what the hub applied: after a hand-off a tab can
        // be behind the hub, and each tab drops what it already has.
        this.emit({ type: 'changes', key: entry.key, changes: message.data.changes });
        break;
      case 'resync_required':
        this.resync(entry);
        break;
      case 'subscription_ended':
        if (message.data.reason === 'revoked') this.end(entry, message.data.reason);
        // server_shutdown: the close (1001) follows and the reconnect resumes it.
        break;
      case 'unsubscribed':
        this.bySubscription.delete(subscriptionId);
        break;
      default:
        break;
    }
  }

  private subscribe(entry: Entry): void {
    const session = this.session;
    if (!session) return;
    const resumeFrom = entry.cache.ready ? minSeq(entry.cache.lastSeq, entry.floor) : entry.floor;
    entry.floor = null;
    entry.activeFrom = resumeFrom;
    entry.inFlight = true;
    const generation = ++entry.generation;
    const previous = entry.subscriptionId;
    const query = entry.forceInitialData
      ? { ...entry.query, includeInitialData: true }
      : entry.query;
    session.subscribe({ query, resumeFrom: resumeFrom ?? undefined, tabId: this.tabId }).then(
      (reply) => {
        if (this.session !== session) return;
        if (generation !== entry.generation || this.entries.get(entry.key) !== entry) {
          void session.unsubscribe(reply.subscriptionId).catch(() => undefined);
          return;
        }
        entry.inFlight = false;
        entry.forceInitialData = false;
        entry.subscriptionId = reply.subscriptionId;
        this.bySubscription.set(reply.subscriptionId, entry);
        if (previous && previous !== reply.subscriptionId) this.retire(previous);
        if (!query.includeInitialData && !entry.cache.ready) {
          entry.cache.markReady(resumeFrom);
          this.emit({ type: 'snapshot', key: entry.key, documents: [], seq: resumeFrom });
        }
        this.replayOrphans(reply.subscriptionId);
      },
      (err: unknown) => {
        if (this.session !== session || generation !== entry.generation) return;
        entry.inFlight = false;
        if (err instanceof TransportClosedError) return; // the reconnect subscribes again
        const error: RealtimeErrorInfo =
          err instanceof RealtimeRequestError
            ? err.info
            : { code: 'internal', message: err instanceof Error ? err.message : String(err) };
        this.entries.delete(entry.key);
        this.emit({ type: 'status', key: entry.key, status: 'error', error });
      },
    );
    this.emit({
      type: 'status',
      key: entry.key,
      status: entry.cache.ready ? 'live' : 'loading',
    });
  }

  /** The server's log does not reach back to our seq: start over from a fresh snapshot. */
  private resync(entry: Entry): void {
    entry.cache.reset();
    entry.floor = null;
    this.emit({ type: 'status', key: entry.key, status: 'resyncing' });
    // With initial data asked for, the server sends the snapshot right after this message.
    if (entry.query.includeInitialData) return;
    entry.forceInitialData = true;
    this.subscribe(entry);
  }

  private end(entry: Entry, reason: string): void {
    this.entries.delete(entry.key);
    entry.generation++;
    if (entry.subscriptionId) this.bySubscription.delete(entry.subscriptionId);
    this.emit({
      type: 'status',
      key: entry.key,
      status: 'ended',
      error: { code: 'subscription_ended', message: `subscription ended: ${reason}` },
    });
  }

  private retire(subscriptionId: string): void {
    this.bySubscription.delete(subscriptionId);
    this.orphanCount -= this.orphans.get(subscriptionId)?.length ?? 0;
    this.orphans.delete(subscriptionId);
    this.retired.add(subscriptionId);
    void this.session?.unsubscribe(subscriptionId).catch(() => undefined);
  }

  /**
   * Over SSE (and with `ws` delivering several frames in one tick) the first events of a
   * subscription can arrive before the reply that names it; they wait here for it.
   */
  private keepOrphan(subscriptionId: string, message: ServerMessage): void {
    if (this.orphanCount >= MAX_ORPHANS) return;
    const list = this.orphans.get(subscriptionId) ?? [];
    list.push(message);
    this.orphans.set(subscriptionId, list);
    this.orphanCount++;
  }

  private replayOrphans(subscriptionId: string): void {
    const list = this.orphans.get(subscriptionId);
    if (!list) return;
    this.orphans.delete(subscriptionId);
    this.orphanCount -= list.length;
    for (const message of list) this.handle(message);
  }
}
