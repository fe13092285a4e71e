import type { BackoffOptions } from './backoff';
import { fieldLevelMerge, strategyName, type ConflictStrategy } from './conflict';
import { RealtimeConnection, type ConnectionStateDetail } from './connection';
import { Emitter } from './emitter';
import { IndexedDbQueueStorage } from './indexeddb-queue-storage';
import { LiveQueryCache } from './live-query-cache';
import {
  MemoryQueueStorage,
  OfflineQueue,
  type QueueStorage,
  type SendResult,
} from './offline-queue';
import { applyPendingWrites } from './optimistic';
import { matchesQuery, normalizeQuery, queryKey } from './query';
import { RestWriter } from './rest-writer';
import { SubscriptionHub, type HubMessage } from './subscription-hub';
import { TabCoordinator, type CoordinatorEnvironment, type TabMessage } from './tab-coordinator';
import { TokenSource, type TokenProvider } from './token';
import type { EventSourceConstructor, FetchFunction, WebSocketConstructor } from './transport';
import type {
  ConnectionState,
  Doc,
  NormalizedQuery,
  PendingWrite,
  QueryInput,
  RealtimeErrorInfo,
  SubscriptionStatus,
  TabRole,
  TransportKind,
  TransportPreference,
  WireChange,
  WriteOutcome,
} from './types';

export interface RealtimeClientOptions {
  /**
   * The app's http(s) base URL; WebSocket and SSE URLs derive from it.
   * @default location.origin in browsers
   * @example 'https://tracker.example.com'
   */
  url?: string;
  /**
   * Returns a JWT. Called for the first connection, before the token expires, after the
   * server refused it (`forceRefresh: true`) and after standby; never cached past `exp`.
   * @example getToken: async () => (await fetch('/auth/token')).text()
   */
  getToken: TokenProvider;
  /** @default 'auto' (WebSocket, SSE when WebSocket is missing or keeps failing to open) */
  transport?: TransportPreference;
  /** @default '/realtime' */
  realtimePath?: string;
  /** @default '/api' */
  apiPath?: string;
  /** reconnect back-off @default { initialDelayMs: 500, maxDelayMs: 30000, factor: 2, jitter: 0.5 } */
  reconnect?: BackoffOptions;
  /** @default 30000 */
  refreshBeforeExpiryMs?: number;
  /**
   * Share one connection among the tabs of this origin (Web Locks + BroadcastChannel).
   * Tabs that share it must act as the same user: give each user its own `channelName`.
   * @default true
   */
  crossTab?: boolean;
  /** @default `realtime-client:<url>` */
  channelName?: string;
  /** where unsent writes wait @default IndexedDB in browsers, memory elsewhere */
  storage?: QueueStorage;
  /** strategy for collections that set none @default 'server-wins' */
  conflict?: ConflictStrategy;
  WebSocketImpl?: WebSocketConstructor;
  EventSourceImpl?: EventSourceConstructor;
  fetchImpl?: FetchFunction;
  /** for tests: Web Locks and BroadcastChannel @default navigator.locks, BroadcastChannel */
  environment?: CoordinatorEnvironment;
}

export interface DataInfo {
  /** the changes just applied; empty for a snapshot or an optimistic write */
  changes: WireChange[];
  /** true when the whole result was replaced (initial data, resync, hand-off) */
  snapshot: boolean;
}

export interface SubscriptionHandlers<T extends Doc = Doc> {
  /** the current result set, optimistic writes included, after every change */
  onData?(documents: T[], info: DataInfo): void;
  onStatus?(status: SubscriptionStatus, error?: RealtimeErrorInfo): void;
  onError?(error: RealtimeErrorInfo): void;
}

/** A live query: its result stays current until `unsubscribe()`. */
export interface LiveQuery<T extends Doc = Doc> {
  readonly key: string;
  readonly query: NormalizedQuery;
  readonly documents: T[];
  readonly status: SubscriptionStatus;
  readonly error: RealtimeErrorInfo | undefined;
  unsubscribe(): void;
}

export interface ConflictEvent {
  collection: string;
  documentId: string;
  strategy: string;
  write: PendingWrite;
  /** the server's document when the conflict was detected (null: deleted) */
  server: Doc | null;
  /** the document after resolution (null: deleted) */
  resolved: Doc | null;
}

export interface RealtimeClientEvents {
  state: {
    state: ConnectionState;
    previous: ConnectionState;
    transport: TransportKind | null;
  } & Omit<ConnectionStateDetail, 'transport'>;
  connecting: ConnectionStateDetail;
  open: ConnectionStateDetail;
  reconnecting: ConnectionStateDetail;
  offline: ConnectionStateDetail;
  error: RealtimeErrorInfo;
  closed: ConnectionStateDetail;
  role: { role: TabRole; tabId: string };
  leader: { tabId: string };
  follower: { tabId: string };
  /** a write of this tab met a 409 and was resolved with the collection's strategy */
  conflict: ConflictEvent;
  /** a write of this tab left the queue (applied, resolved or rejected) */
  'write-settled': { write: PendingWrite; outcome: WriteOutcome };
  /** a write of this tab was refused for good (400, 403, …); its optimistic effect is gone */
  'write-error': { write: PendingWrite; error: RealtimeErrorInfo };
}

export interface WriteOptions {
  /** the version the change is based on; defaults to the cached document's version */
  version?: number;
}

/** Writes to one collection through the REST API, optimistic and queued while offline. */
export interface Collection<T extends Doc = Doc> {
  readonly name: string;
  /** Resolves with the created document once the server has it. */
  create(doc: Partial<T>): Promise<WriteOutcome>;
  update(id: string, patch: Partial<T>, options?: WriteOptions): Promise<WriteOutcome>;
  delete(id: string, options?: WriteOptions): Promise<WriteOutcome>;
}

export interface CollectionOptions {
  /** what to do when the server answers 409 @default the client's `conflict` option */
  conflict?: ConflictStrategy;
}

/** A write the server refused for good. */
export class RealtimeWriteError extends Error {
  constructor(
    readonly info: RealtimeErrorInfo,
    readonly write: PendingWrite,
  ) {
    super(info.message);
    this.name = 'RealtimeWriteError';
  }
}

interface QueryState {
  key: string;
  query: NormalizedQuery;
  cache: LiveQueryCache;
  status: SubscriptionStatus;
  error?: RealtimeErrorInfo;
  handles: Set<Handle>;
  view: Doc[] | null;
}

class Handle implements LiveQuery {
  private closed = false;

  constructor(
    private readonly state: QueryState,
    readonly handlers: SubscriptionHandlers,
    private readonly client: RealtimeClient,
    private readonly release: (handle: Handle) => void,
  ) {}

  get key(): string {
    return this.state.key;
  }
  get query(): NormalizedQuery {
    return this.state.query;
  }
  get documents(): Doc[] {
    return this.client.viewOf(this.state);
  }
  get status(): SubscriptionStatus {
    return this.state.status;
  }
  get error(): RealtimeErrorInfo | undefined {
    return this.state.error;
  }

  unsubscribe(): void {
    if (this.closed) return;
    this.closed = true;
    this.release(this);
  }
}

const DRAIN_RETRY_MS = 5_000;

/**
 * The client. Create it with {@link createRealtimeClient}.
 */
export class RealtimeClient {
  /** this tab's id, unique per page load */
  readonly tabId = randomId();
  private readonly events = new Emitter<RealtimeClientEvents>();
  private readonly queries = new Map<string, QueryState>();
  private readonly tokens: TokenSource;
  private readonly coordinator: TabCoordinator;
  private readonly storage: QueueStorage;
  private readonly queue: OfflineQueue;
  private readonly writer: RestWriter;
  private readonly strategies = new Map<string, ConflictStrategy>();
  private readonly collections = new Map<string, Collection>();
  private readonly waiters = new Map<
    string,
    { resolve(o: WriteOutcome): void; reject(e: Error): void }
  >();
  /** writes this tab heard of in this page's life; the rest are from an earlier session */
  private readonly seenWrites = new Set<string>();
  private readonly baseUrl: string;
  private hub: SubscriptionHub | null = null;
  private connection: RealtimeConnection | null = null;
  private leaderId: string | null = null;
  private connectionState: ConnectionState = 'idle';
  private currentTransport: TransportKind | null = null;
  private pending: PendingWrite[] = [];
  private online: boolean;
  private closed = false;
  private drainTimer: ReturnType<typeof setTimeout> | undefined;
  private lastOrder = 0;
  private readonly detachWindow: () => void;

  constructor(private readonly options: RealtimeClientOptions) {
    if (typeof options.getToken !== 'function') {
      throw new TypeError('createRealtimeClient: getToken is required');
    }
    const base = options.url ?? globalThis.location?.origin;
    if (!base) throw new TypeError('createRealtimeClient: url is required outside a browser');
    this.baseUrl = base.replace(/\/+$/, '');
    const fetchImpl = options.fetchImpl ?? globalThis.fetch?.bind(globalThis);
    if (!fetchImpl) throw new TypeError('createRealtimeClient: no fetch; pass fetchImpl');
    this.tokens = new TokenSource(options.getToken);
    const channelName = options.channelName ?? `realtime-client:${this.baseUrl}`;
    this.storage =
      options.storage ??
      (globalThis.indexedDB
        ? new IndexedDbQueueStorage(`${channelName}:writes`)
        : new MemoryQueueStorage());
    this.writer = new RestWriter({
      apiBase: `${this.baseUrl}${options.apiPath ?? '/api'}`,
      fetchImpl,
      tokens: this.tokens,
      strategyFor: (write) => this.strategyFor(write),
    });
    this.queue = new OfflineQueue(this.storage, (write) => this.send(write));
    this.online = globalThis.navigator?.onLine ?? true;
    this.detachWindow = this.listenToWindow();
    const environment: CoordinatorEnvironment =
      options.crossTab === false
        ? {}
        : (options.environment ?? {
            locks: globalThis.navigator?.locks,
            BroadcastChannelImpl: globalThis.BroadcastChannel,
          });
    this.coordinator = new TabCoordinator(
      channelName,
      this.tabId,
      {
        role: (role) => this.onRole(role),
        message: (message) => this.onTabMessage(message),
      },
      environment,
    );
    void this.storage.load().then(
      (writes) => {
        for (const write of writes) this.addPending(write);
      },
      (err: unknown) => console.warn('realtime client: cannot read queued writes', err),
    );
    this.coordinator.start();
  }

  get state(): ConnectionState {
    return this.connectionState;
  }

  /** null until the election has run (a microtask in Node, a lock request in browsers) */
  get role(): TabRole | null {
    return this.coordinator.role;
  }

  get transport(): TransportKind | null {
    return this.currentTransport;
  }

  /** Writes not yet confirmed by the server, oldest first. */
  get pendingWrites(): readonly PendingWrite[] {
    return this.pending;
  }

  /**
   * Listens to a client event; returns the function that stops listening.
   * @example
   * client.on('state', ({ state }) => badge.textContent = state);
   * client.on('conflict', (c) => toast(`conflict on ${c.documentId} resolved: ${c.strategy}`));
   */
  on<K extends keyof RealtimeClientEvents>(
    event: K,
    listener: (payload: RealtimeClientEvents[K]) => void,
  ): () => void {
    return this.events.on(event, listener);
  }

  /**
   * Subscribes to a query. Identical queries (after normalisation) share one cache in the
   * tab and one server subscription in the browser.
   * @example
   * const tasks = client.subscribe(
   *   { collection: 'tasks', filters: [{ type: 'field', field: 'status', operator: 'eq', value: 'todo' }], includeInitialData: true },
   *   { onData: (docs) => render(docs), onError: (e) => console.error(e.message) },
   * );
   * // later
   * tasks.unsubscribe();
   */
  subscribe<T extends Doc = Doc>(
    input: QueryInput,
    handlers: SubscriptionHandlers<T> = {},
  ): LiveQuery<T> {
    if (this.closed) throw new Error('the realtime client is closed');
    const query = normalizeQuery(input);
    const key = queryKey(query);
    let state = this.queries.get(key);
    if (!state) {
      state = {
        key,
        query,
        cache: new LiveQueryCache(),
        status: 'loading',
        handles: new Set(),
        view: null,
      };
      this.queries.set(key, state);
      this.sendWant(state);
    }
    const handle = new Handle(state, handlers as SubscriptionHandlers, this, (h) =>
      this.release(state, h),
    );
    state.handles.add(handle);
    if (state.cache.ready) {
      const ready = state;
      queueMicrotask(() => {
        if (ready.handles.has(handle)) {
          handle.handlers.onData?.(this.viewOf(ready), { changes: [], snapshot: true });
        }
      });
    }
    return handle as unknown as LiveQuery<T>;
  }

  /**
   * Writes to a collection through the REST API.
   * @example
   * const tasks = client.collection('tasks', { conflict: 'client-wins' });
   * await tasks.update(task.id, { status: 'done' }, { version: task.version });
   */
  collection<T extends Doc = Doc>(name: string, options: CollectionOptions = {}): Collection<T> {
    if (options.conflict) this.strategies.set(name, options.conflict);
    let collection = this.collections.get(name);
    if (!collection) {
      collection = {
        name,
        create: (doc) => this.submit('create', name, `local:${randomId()}`, { ...doc }),
        update: (id, patch, opts) => this.submit('update', name, id, { ...patch }, opts?.version),
        delete: (id, opts) => this.submit('delete', name, id, undefined, opts?.version),
      };
      this.collections.set(name, collection);
    }
    return collection as unknown as Collection<T>;
  }

  /**
   * The writing tab's named strategy wins; for a merge, this tab's function for the
   * collection (the same application code) does the merging.
   */
  private strategyFor(write: PendingWrite): ConflictStrategy {
    const own = this.strategies.get(write.collection) ?? this.options.conflict ?? 'server-wins';
    if (write.strategy === 'server-wins' || write.strategy === 'client-wins') return write.strategy;
    if (write.strategy === 'merge' && typeof own === 'string') return fieldLevelMerge;
    return own;
  }

  /** Tries to send queued writes now (the leader sends them; other tabs ask it to). */
  flush(): void {
    if (this.hub) this.drain();
  }

  /** Closes the connection (handing leadership to another tab) and stops everything. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.drainTimer);
    this.detachWindow();
    this.coordinator.close();
    this.connection?.stop();
    this.connection = null;
    this.hub = null;
    this.events.clear();
  }

  /** @internal the documents a live query shows: confirmed ones plus pending writes */
  viewOf(state: QueryState): Doc[] {
    state.view ??= applyPendingWrites(state.cache.map, this.pending, state.query);
    return state.view;
  }

  // --- cross-tab ---------------------------------------------------------------------

  private onRole(role: TabRole): void {
    if (this.closed) return;
    this.events.emit('role', { role, tabId: this.tabId });
    this.events.emit(role, { tabId: this.tabId });
    if (role === 'follower') {
      this.coordinator.post({ type: 'hello', from: this.tabId });
      return;
    }
    this.leaderId = this.tabId;
    const hub = new SubscriptionHub(this.tabId, (message) => this.fromHub(message));
    this.hub = hub;
    for (const state of this.queries.values()) hub.want(this.wantOf(state));
    const { options } = this;
    const connection = new RealtimeConnection(
      {
        baseUrl: this.baseUrl,
        realtimePath: options.realtimePath ?? '/realtime',
        transport: options.transport ?? 'auto',
        tokens: this.tokens,
        fetchImpl: options.fetchImpl ?? globalThis.fetch.bind(globalThis),
        WebSocketImpl: options.WebSocketImpl ?? globalThis.WebSocket,
        EventSourceImpl: options.EventSourceImpl ?? globalThis.EventSource,
        reconnect: options.reconnect,
        refreshBeforeExpiryMs: options.refreshBeforeExpiryMs ?? 30_000,
      },
      {
        open: (session) => {
          hub.attach(session);
          this.drain();
        },
        message: (message) => hub.handle(message),
        down: () => hub.detach(),
        state: (state, detail) => {
          this.setState(state, connection.transport, detail);
          this.coordinator.post({
            type: 'state',
            from: this.tabId,
            state,
            transport: connection.transport,
          });
        },
      },
    );
    this.connection = connection;
    connection.setOnline(this.online);
    this.coordinator.post({ type: 'leader', from: this.tabId });
    this.coordinator.onSweep(() => void this.sweepTabs());
    connection.start();
    this.drain();
  }

  private onTabMessage(message: TabMessage): void {
    if (this.closed) return;
    const hub = this.hub;
    switch (message.type) {
      case 'hello':
        if (hub) {
          this.coordinator.post({ type: 'leader', from: this.tabId, to: message.from });
          this.coordinator.post({
            type: 'state',
            from: this.tabId,
            state: this.connectionState,
            transport: this.currentTransport,
          });
        }
        break;
      case 'leader':
        if (message.to && message.to !== this.tabId) break;
        if (hub) break;
        this.leaderId = message.from;
        // A new leader knows nothing of this tab's queries; tell it, with what we hold.
        for (const state of this.queries.values()) this.sendWant(state);
        break;
      case 'bye':
        if (hub) hub.dropTab(message.from);
        if (message.from === this.leaderId) this.leaderId = null;
        break;
      case 'want':
        hub?.want({
          tabId: message.from,
          key: message.key,
          query: message.query,
          snapshot: message.snapshot,
        });
        break;
      case 'unwant':
        hub?.unwant(message.from, message.key);
        break;
      case 'hub':
        this.onHubMessage(message.message);
        break;
      case 'state':
        if (!hub) this.setState(message.state, message.transport, {});
        break;
      case 'write-queued':
        this.seenWrites.add(message.write.opId);
        this.addPending(message.write);
        if (hub) this.drain();
        break;
      case 'write-settled':
        this.onSettled(message.write, message.outcome);
        break;
      default: {
        const _exhaustive: never = message;
        return _exhaustive;
      }
    }
  }

  private async sweepTabs(): Promise<void> {
    const live = await this.coordinator.liveTabs().catch(() => null);
    if (!live || !this.hub) return;
    live.add(this.tabId);
    for (const tabId of this.hub.tabs()) if (!live.has(tabId)) this.hub.dropTab(tabId);
  }

  private wantOf(state: QueryState) {
    return {
      tabId: this.tabId,
      key: state.key,
      query: state.query,
      snapshot: state.cache.ready
        ? { documents: state.cache.documents(), seq: state.cache.lastSeq }
        : undefined,
    };
  }

  private sendWant(state: QueryState): void {
    if (this.hub) this.hub.want(this.wantOf(state));
    // Without a known leader the request waits: the leader's announcement asks for it.
    else if (this.leaderId)
      this.coordinator.post({ type: 'want', from: this.tabId, ...this.wantOf(state) });
  }

  private release(state: QueryState, handle: Handle): void {
    state.handles.delete(handle);
    if (state.handles.size > 0 || this.queries.get(state.key) !== state) return;
    this.queries.delete(state.key);
    if (this.hub) this.hub.unwant(this.tabId, state.key);
    else this.coordinator.post({ type: 'unwant', from: this.tabId, key: state.key });
  }

  private fromHub(message: HubMessage): void {
    this.onHubMessage(message);
    if (message.type === 'snapshot' && message.to === this.tabId) return;
    this.coordinator.post({ type: 'hub', from: this.tabId, message });
  }

  private onHubMessage(message: HubMessage): void {
    if (message.type === 'snapshot' && message.to && message.to !== this.tabId) return;
    const state = this.queries.get(message.key);
    if (!state) return;
    switch (message.type) {
      case 'snapshot':
        state.cache.loadSnapshot(message.documents, message.seq);
        this.setStatus(state, 'live');
        this.notify(state, { changes: [], snapshot: true });
        break;
      case 'changes': {
        const applied = state.cache.applyChanges(message.changes);
        if (applied.length) this.notify(state, { changes: applied, snapshot: false });
        break;
      }
      case 'status':
        if (message.status === 'resyncing') {
          state.cache.reset();
          this.setStatus(state, 'resyncing');
          this.notify(state, { changes: [], snapshot: true });
        } else if (message.status === 'ended' || message.status === 'error') {
          this.setStatus(state, message.status, message.error);
        } else if ((message.status === 'live') === state.cache.ready) {
          this.setStatus(state, message.status);
        }
        break;
      default: {
        const _exhaustive: never = message;
        return _exhaustive;
      }
    }
  }

  private setStatus(
    state: QueryState,
    status: SubscriptionStatus,
    error?: RealtimeErrorInfo,
  ): void {
    if (state.status === status && state.error === error) return;
    state.status = status;
    state.error = error;
    for (const handle of [...state.handles]) {
      handle.handlers.onStatus?.(status, error);
      if (error) handle.handlers.onError?.(error);
    }
  }

  private notify(state: QueryState, info: DataInfo): void {
    state.view = null;
    if (!state.cache.ready) return;
    const documents = this.viewOf(state);
    for (const handle of [...state.handles]) handle.handlers.onData?.(documents, info);
  }

  private setState(
    state: ConnectionState,
    transport: TransportKind | null,
    detail: ConnectionStateDetail,
  ): void {
    // A follower that knows it is offline says so, whatever the leader last reported.
    const effective = !this.online && state !== 'closed' && state !== 'error' ? 'offline' : state;
    const previous = this.connectionState;
    this.currentTransport = transport;
    if (previous === effective && effective !== 'reconnecting') return;
    this.connectionState = effective;
    this.events.emit('state', { ...detail, state: effective, previous, transport });
    if (effective === 'error') {
      this.events.emit('error', detail.error ?? { code: 'connection_failed', message: 'error' });
    } else if (effective !== 'idle') {
      this.events.emit(effective, detail);
    }
  }

  private listenToWindow(): () => void {
    const target = typeof window !== 'undefined' ? window : undefined;
    if (!target?.addEventListener) return () => undefined;
    const onOnline = () => this.setOnline(true);
    const onOffline = () => this.setOnline(false);
    const onHide = () => this.close();
    target.addEventListener('online', onOnline);
    target.addEventListener('offline', onOffline);
    target.addEventListener('pagehide', onHide);
    return () => {
      target.removeEventListener('online', onOnline);
      target.removeEventListener('offline', onOffline);
      target.removeEventListener('pagehide', onHide);
    };
  }

  private setOnline(online: boolean): void {
    this.online = online;
    this.connection?.setOnline(online);
    if (!online) this.setState('offline', this.currentTransport, {});
    else if (this.hub) this.drain();
  }

  // --- writes ------------------------------------------------------------------------

  private async submit(
    kind: PendingWrite['kind'],
    collection: string,
    documentId: string,
    data: Doc | undefined,
    version?: number,
  ): Promise<WriteOutcome> {
    if (this.closed) throw new Error('the realtime client is closed');
    const base = this.findDocument(collection, documentId);
    const write: PendingWrite = {
      opId: randomId(),
      tabId: this.tabId,
      order: this.nextOrder(),
      createdAt: Date.now(),
      collection,
      kind,
      documentId,
      data,
      version: kind === 'create' ? undefined : (version ?? numberOrUndefined(base?.version)),
      base: base ?? null,
      strategy: strategyName(
        this.strategies.get(collection) ?? this.options.conflict ?? 'server-wins',
      ),
      attempts: 0,
    };
    this.seenWrites.add(write.opId);
    const settled = new Promise<WriteOutcome>((resolve, reject) =>
      this.waiters.set(write.opId, { resolve, reject }),
    );
    this.addPending(write);
    try {
      await this.queue.enqueue(write);
    } catch (err) {
      this.waiters.delete(write.opId);
      this.removePending(write.opId);
      throw err;
    }
    this.coordinator.post({ type: 'write-queued', from: this.tabId, write });
    if (this.hub) this.drain();
    return settled;
  }

  /** Leader only: sends the queued writes of every tab, in order. */
  private drain(): void {
    if (!this.hub || this.closed) return;
    clearTimeout(this.drainTimer);
    if (!this.online) return;
    void this.queue.drain().then(
      (result) => {
        if (!result.stoppedBy || this.closed) return;
        // Offline with the browser claiming to be online (server down): `online` will not
        // fire, the reconnect's `open` may; poll as a fallback. Calls made during a pass
        // share its result: one timer for all of them, or close() would miss the others.
        clearTimeout(this.drainTimer);
        this.drainTimer = setTimeout(() => this.drain(), result.retryDelayMs ?? DRAIN_RETRY_MS);
      },
      (err: unknown) => console.error('realtime client: sending queued writes failed', err),
    );
  }

  private async send(write: PendingWrite): Promise<SendResult> {
    const { send, outcome } = await this.writer.execute(write);
    if (outcome) {
      await this.rebaseQueued(write, outcome);
      this.onSettled(write, outcome);
      this.coordinator.post({ type: 'write-settled', from: this.tabId, write, outcome });
    }
    return send;
  }

  /**
   * Later writes were made on top of this one's optimistic result: give them the id the
   * server assigned and the version it produced, or they would fail as conflicts with
   * the user's own edit.
   */
  private async rebaseQueued(write: PendingWrite, outcome: WriteOutcome): Promise<void> {
    const document = outcome.status === 'rejected' ? null : outcome.document;
    if (!document) return;
    for (const later of await this.storage.load()) {
      const rebased = rebase(later, write, document);
      if (rebased) await this.storage.put(rebased);
    }
  }

  private onSettled(write: PendingWrite, outcome: WriteOutcome): void {
    const document = outcome.status === 'rejected' ? undefined : outcome.document;
    this.pending = this.pending
      .filter((w) => w.opId !== write.opId)
      .map((w) => (document ? (rebase(w, write, document) ?? w) : w));
    for (const state of this.queries.values()) {
      if (state.query.collection !== write.collection) continue;
      if (state.cache.ready && document !== undefined) {
        if (document === null) state.cache.writeThroughDelete(write.documentId);
        else {
          const matches = matchesQuery(state.query, document);
          if (matches === false) state.cache.writeThroughDelete(String(document.id));
          else state.cache.writeThrough(document, matches === true);
        }
      }
      this.notify(state, { changes: [], snapshot: false });
    }
    // Report to the tab that made the write; a write from an earlier page load has no such
    // tab any more, so the leader that sent it reports it.
    const mine = write.tabId === this.tabId;
    if (!mine && !(this.hub && !this.seenWrites.has(write.opId))) return;
    this.events.emit('write-settled', { write, outcome });
    const waiter = this.waiters.get(write.opId);
    this.waiters.delete(write.opId);
    if (outcome.status === 'conflict') {
      this.events.emit('conflict', {
        collection: write.collection,
        documentId: String(outcome.document?.id ?? outcome.server?.id ?? write.documentId),
        strategy: outcome.strategy,
        write,
        server: outcome.server,
        resolved: outcome.document,
      });
    }
    if (outcome.status === 'rejected') {
      this.events.emit('write-error', { write, error: outcome.error });
      waiter?.reject(new RealtimeWriteError(outcome.error, write));
    } else {
      waiter?.resolve(outcome);
    }
  }

  private addPending(write: PendingWrite): void {
    if (this.pending.some((w) => w.opId === write.opId)) return;
    this.pending = [...this.pending, write].sort(
      (a, b) => a.order - b.order || (a.opId < b.opId ? -1 : 1),
    );
    this.refreshCollection(write.collection);
  }

  private removePending(opId: string): void {
    const write = this.pending.find((w) => w.opId === opId);
    if (!write) return;
    this.pending = this.pending.filter((w) => w.opId !== opId);
    this.refreshCollection(write.collection);
  }

  private refreshCollection(collection: string): void {
    for (const state of this.queries.values()) {
      if (state.query.collection === collection)
        this.notify(state, { changes: [], snapshot: false });
    }
  }

  private findDocument(collection: string, id: string): Doc | undefined {
    for (const state of this.queries.values()) {
      if (state.query.collection !== collection) continue;
      const doc = this.viewOf(state).find((d) => String(d.id) === id);
      if (doc) return doc;
    }
    return undefined;
  }

  /** Strictly increasing within the tab, close to the clock across tabs. */
  private nextOrder(): number {
    this.lastOrder = Math.max(Date.now(), this.lastOrder + 1);
    return this.lastOrder;
  }
}

/**
 * `later` rewritten to build on `settled`'s result, or null when it does not depend on it.
 * Exported for tests.
 */
export function rebase(
  later: PendingWrite,
  settled: PendingWrite,
  result: Doc,
): PendingWrite | null {
  if (later.opId === settled.opId || later.collection !== settled.collection) return null;
  if (later.documentId !== settled.documentId || later.order < settled.order) return null;
  const version = numberOrUndefined(result.version);
  if (settled.kind === 'create') {
    return {
      ...later,
      documentId: String(result.id),
      version: later.version ?? version,
      base: later.base ? { ...later.base, id: result.id, version: result.version } : later.base,
    };
  }
  if (settled.kind === 'update' && later.version === settled.version && version !== undefined) {
    return { ...later, version };
  }
  return null;
}

function numberOrUndefined(value: unknown): number | undefined {
  return typeof value === 'number' ? value : undefined;
}

function randomId(): string {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  // crypto.randomUUID needs a secure context; plain-http intranet pages still need ids.
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * Creates a client: connects (or joins the tab that is connected), and keeps live queries
 * and writes in step with the server.
 * @example
 * import { createRealtimeClient } from './realtime-client.js';
 *
 * const client = createRealtimeClient({
 *   url: 'https://tracker.example.com',
 *   getToken: async ({ forceRefresh }) => auth.token(forceRefresh),
 *   transport: 'auto',
 * });
 * client.on('state', ({ state }) => console.log('connection', state));
 * const board = client.subscribe({ collection: 'tasks', includeInitialData: true }, {
 *   onData: (tasks) => render(tasks),
 * });
 */
export function createRealtimeClient(options: RealtimeClientOptions): RealtimeClient {
  return new RealtimeClient(options);
}
