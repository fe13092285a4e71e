import { Backoff, type BackoffOptions } from './backoff';
import { openSse, SSE_AUTH_FAILED } from './sse-transport';
import type { TokenSource } from './token';
import type {
  CloseInfo,
  EventSourceConstructor,
  FetchFunction,
  TransportSession,
  WebSocketConstructor,
} from './transport';
import type {
  ConnectionState,
  RealtimeErrorInfo,
  ServerEventMap,
  ServerMessage,
  TransportKind,
  TransportPreference,
} from './types';
import { openWebSocket } from './websocket-transport';

export interface ConnectionOptions {
  baseUrl: string;
  realtimePath: string;
  transport: TransportPreference;
  tokens: TokenSource;
  fetchImpl: FetchFunction;
  WebSocketImpl?: WebSocketConstructor;
  EventSourceImpl?: EventSourceConstructor;
  reconnect?: BackoffOptions;
  /** refresh this long before `exp` @default 30000 */
  refreshBeforeExpiryMs: number;
}

export interface ConnectionStateDetail {
  transport?: TransportKind;
  connectionId?: string;
  attempt?: number;
  delayMs?: number;
  error?: RealtimeErrorInfo;
  closeCode?: number;
}

export interface ConnectionHandlers {
  open(session: TransportSession, info: ServerEventMap['connection_established']): void;
  message(message: ServerMessage): void;
  /** the session is gone; every server subscription died with it */
  down(): void;
  state(state: ConnectionState, detail: ConnectionStateDetail): void;
}

/** WebSocket failures before `connection_established` after which `auto` tries SSE. */
const WEBSOCKET_FAILURES_BEFORE_FALLBACK = 2;
/** A wall-clock jump this large between ticks means the machine slept. */
const WAKE_CHECK_MS = 5_000;
const WAKE_GAP_MS = 15_000;

/**
 * Keeps one transport session alive: opens it with a fresh token, reconnects with back-off
 * and jitter, refreshes the token before it expires, and maps close codes to what
 * PROTOCOL.md asks of a client (4001 → new token, 1008 → stop, others → back off).
 */
export class RealtimeConnection {
  private session: TransportSession | null = null;
  private current: ConnectionState = 'idle';
  private readonly backoff: Backoff;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private wakeTimer: ReturnType<typeof setInterval> | undefined;
  private lastTick = Date.now();
  private stopped = true;
  private online = true;
  private everOpened = false;
  private websocketFailures = 0;
  private useSse: boolean;
  /** bumped whenever a session is abandoned, so late callbacks of an old one do nothing */
  private epoch = 0;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly handlers: ConnectionHandlers,
  ) {
    this.backoff = new Backoff(options.reconnect);
    this.useSse =
      options.transport === 'sse' || (options.transport === 'auto' && !options.WebSocketImpl);
  }

  get state(): ConnectionState {
    return this.current;
  }

  get transport(): TransportKind | null {
    return this.session?.kind ?? null;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.wakeTimer = setInterval(() => this.checkWake(), WAKE_CHECK_MS);
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.wakeTimer);
    this.drop('client closed', 1000);
    this.setState('closed', {});
  }

  /** The browser's `online` / `offline` events: no point in knocking while offline. */
  setOnline(online: boolean): void {
    if (this.online === online) return;
    this.online = online;
    if (this.stopped) return;
    if (!online) {
      this.drop('offline', 1000);
      this.setState('offline', {});
    } else {
      this.backoff.reset();
      this.connect();
    }
  }

  private connect(): void {
    clearTimeout(this.reconnectTimer);
    if (this.stopped || this.session || !this.online) return;
    const epoch = ++this.epoch;
    this.setState(this.everOpened ? 'reconnecting' : 'connecting', {
      attempt: this.backoff.attempts,
    });
    void this.options.tokens.get().then(
      (token) => {
        if (epoch !== this.epoch || this.stopped) return;
        this.open(token, epoch);
      },
      (err: unknown) => {
        if (epoch !== this.epoch) return;
        this.scheduleReconnect({
          code: 'connection_failed',
          message: `getToken failed: ${err instanceof Error ? err.message : String(err)}`,
        });
      },
    );
  }

  private open(token: string, epoch: number): void {
    const { options } = this;
    const kind: TransportKind = this.useSse ? 'sse' : 'websocket';
    const transportOptions = {
      baseUrl: options.baseUrl,
      realtimePath: options.realtimePath,
      token,
      getToken: () => options.tokens.get(),
      fetchImpl: options.fetchImpl,
      handlers: {
        established: (info: ServerEventMap['connection_established']) => {
          if (epoch !== this.epoch || !this.session) return;
          this.everOpened = true;
          this.websocketFailures = 0;
          this.backoff.reset();
          this.scheduleRefresh(epoch);
          this.setState('open', { transport: kind, connectionId: info.connectionId });
          this.handlers.open(this.session, info);
        },
        message: (message: ServerMessage) => {
          if (epoch === this.epoch) this.handlers.message(message);
        },
        closed: (info: CloseInfo) => {
          if (epoch === this.epoch) this.onClosed(kind, info);
        },
      },
    };
    try {
      if (kind === 'sse') {
        if (!options.EventSourceImpl) throw new Error('no EventSource implementation');
        this.session = openSse(options.EventSourceImpl, transportOptions);
      } else {
        if (!options.WebSocketImpl) throw new Error('no WebSocket implementation');
        this.session = openWebSocket(options.WebSocketImpl, transportOptions);
      }
    } catch (err) {
      this.stopped = true;
      this.setState('error', {
        error: {
          code: 'connection_failed',
          message: `cannot open a ${kind} connection: ${err instanceof Error ? err.message : String(err)}`,
        },
      });
    }
  }

  private onClosed(kind: TransportKind, info: CloseInfo): void {
    this.session = null;
    clearTimeout(this.refreshTimer);
    this.epoch++;
    this.handlers.down();
    if (this.stopped || !this.online) return;
    switch (info.code) {
      case 1008:
      case SSE_AUTH_FAILED:
        // A fresh token was refused: retrying with the same credentials cannot help.
        this.stopped = true;
        this.setState('error', {
          closeCode: info.code,
          error: { code: 'forbidden', message: info.reason || 'authentication failed' },
        });
        return;
      case 4001:
        this.options.tokens.invalidate();
        // Reconnect at once the first time; a server that keeps refusing gets back-off.
        if (info.established) this.backoff.reset();
        break;
      case 4008:
        this.backoff.jumpToMax();
        break;
      default:
        if (!info.established && kind === 'websocket') this.maybeFallBackToSse();
    }
    this.scheduleReconnect(undefined, info.code);
  }

  private maybeFallBackToSse(): void {
    this.websocketFailures++;
    if (
      this.options.transport === 'auto' &&
      this.options.EventSourceImpl &&
      !this.everOpened &&
      this.websocketFailures >= WEBSOCKET_FAILURES_BEFORE_FALLBACK
    ) {
      // Proxies that break the upgrade tend to break it every time; SSE goes through.
      this.useSse = true;
    }
  }

  private scheduleReconnect(error?: RealtimeErrorInfo, closeCode?: number): void {
    const delayMs = this.backoff.attempts === 0 && closeCode === 4001 ? 0 : this.backoff.next();
    this.setState('reconnecting', { attempt: this.backoff.attempts, delayMs, error, closeCode });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connect(), delayMs);
  }

  /** Closes the current session on purpose (offline, stop, token refresh over SSE). */
  private drop(reason: string, code: number): void {
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.refreshTimer);
    const session = this.session;
    this.session = null;
    this.epoch++;
    if (session) {
      session.close(code, reason);
      this.handlers.down();
    }
  }

  private scheduleRefresh(epoch: number): void {
    clearTimeout(this.refreshTimer);
    const left = this.options.tokens.msUntilExpiry();
    if (left === undefined) return;
    // Half the remaining life at least, so a token shorter-lived than the lead time does
    // not turn into a refresh loop.
    const delay = Math.max(left - this.options.refreshBeforeExpiryMs, left / 2, 1_000);
    this.refreshTimer = setTimeout(() => void this.refresh(epoch), delay);
  }

  /**
   * WebSocket refreshes in band (`auth`); SSE has no such message, so it reconnects with
   * the new token and resumes every subscription from its last seq.
   */
  private async refresh(epoch: number): Promise<void> {
    const session = this.session;
    if (!session || epoch !== this.epoch) return;
    try {
      const token = await this.options.tokens.get(true);
      if (epoch !== this.epoch || this.session !== session) return;
      if (session.reauthenticate) {
        await session.reauthenticate(token);
        if (epoch === this.epoch) this.scheduleRefresh(epoch);
        return;
      }
    } catch {
      // Refused or failed: a new connection with whatever token getToken gives next.
      if (epoch !== this.epoch) return;
    }
    this.drop('token refresh', 1000);
    this.backoff.reset();
    this.connect();
  }

  /** After standby the refresh timer may be late and the token dead: act now. */
  private checkWake(): void {
    const now = Date.now();
    const slept = now - this.lastTick > WAKE_GAP_MS;
    this.lastTick = now;
    if (!slept || this.stopped) return;
    if (this.session && !this.options.tokens.isFresh()) void this.refresh(this.epoch);
    else if (!this.session && this.online) {
      this.backoff.reset();
      this.connect();
    }
  }

  private setState(state: ConnectionState, detail: ConnectionStateDetail): void {
    const changed = state !== this.current;
    this.current = state;
    if (changed || state === 'reconnecting') this.handlers.state(state, detail);
  }
}
