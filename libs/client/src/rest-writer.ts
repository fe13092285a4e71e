import { resolveConflict, strategyName, type ConflictStrategy } from './conflict';
import { readErrorInfo } from './http';
import type { SendResult } from './offline-queue';
import type { TokenSource } from './token';
import type { FetchFunction } from './transport';
import type { Doc, PendingWrite, WriteOutcome } from './types';

export interface RestWriterOptions {
  /** e.g. `https://app.example.com/api` */
  apiBase: string;
  fetchImpl: FetchFunction;
  tokens: TokenSource;
  strategyFor(write: PendingWrite): ConflictStrategy;
  /** conflict rounds before the server's document is accepted as is @default 3 */
  maxConflictRetries?: number;
}

export interface ExecuteResult {
  send: SendResult;
  /** set when the write left the queue */
  outcome?: WriteOutcome;
}

const TRANSIENT = new Set([408, 425, 429, 500, 502, 503, 504]);

/**
 * Sends one queued write to the REST API and resolves 409s with the collection's
 * strategy. Network failures report `offline` so the queue stops and keeps the write;
 * the caller decides when to try again.
 */
export class RestWriter {
  constructor(private readonly options: RestWriterOptions) {}

  async execute(original: PendingWrite): Promise<ExecuteResult> {
    const strategy = this.options.strategyFor(original);
    const maxRetries = this.options.maxConflictRetries ?? 3;
    let write = original;
    let conflictServer: Doc | null | undefined;
    let rounds = 0;
    let authRetried = false;
    const conflict = (document: Doc | null): ExecuteResult => ({
      send: { kind: 'settled' },
      outcome: {
        status: 'conflict',
        strategy: strategyName(strategy),
        document,
        server: conflictServer ?? null,
      },
    });

    for (;;) {
      let response: Response;
      try {
        response = await this.request(write);
      } catch {
        return { send: { kind: 'offline' } };
      }
      if (response.ok) {
        const document =
          write.kind === 'delete' || response.status === 204
            ? null
            : ((await response.json()) as Doc);
        if (conflictServer !== undefined) return conflict(document);
        return { send: { kind: 'settled' }, outcome: { status: 'applied', document } };
      }
      if (response.status === 409 && write.kind !== 'create') {
        const server = currentDocument(await response.json().catch(() => null));
        conflictServer = server;
        const resolution = resolveConflict(write, server, strategy);
        if (resolution.action === 'accept-server' || rounds >= maxRetries) return conflict(server);
        write = resolution.write;
        rounds++;
        continue;
      }
      if (response.status === 404 && write.kind !== 'create') {
        // Gone on the server: a delete has nothing left to do, an update lost its target.
        if (write.kind === 'delete' && conflictServer === undefined) {
          return { send: { kind: 'settled' }, outcome: { status: 'applied', document: null } };
        }
        conflictServer = null;
        return conflict(null);
      }
      if (response.status === 401 && !authRetried) {
        authRetried = true;
        this.options.tokens.invalidate();
        continue;
      }
      if (response.status === 401 || TRANSIENT.has(response.status)) {
        return { send: { kind: 'retry', delayMs: retryAfterMs(response) } };
      }
      return {
        send: { kind: 'settled' },
        outcome: { status: 'rejected', error: await readErrorInfo(response) },
      };
    }
  }

  private async request(write: PendingWrite): Promise<Response> {
    const token = await this.options.tokens.get();
    const headers: Record<string, string> = {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      accept: 'application/json',
    };
    const collection = encodeURIComponent(write.collection);
    const url = `${this.options.apiBase}/${collection}`;
    const itemUrl = `${url}/${encodeURIComponent(write.documentId)}`;
    switch (write.kind) {
      case 'create':
        // the write's id as the key: a retry of a POST whose answer was lost (offline, a
        // reload) gets the document the first one made, not a second one
        return this.options.fetchImpl(url, {
          method: 'POST',
          headers: { ...headers, 'idempotency-key': write.opId },
          body: JSON.stringify(write.data ?? {}),
        });
      case 'update':
        return this.options.fetchImpl(itemUrl, {
          method: 'PATCH',
          headers,
          body: JSON.stringify(
            write.version === undefined ? write.data : { ...write.data, version: write.version },
          ),
        });
      case 'delete':
        return this.options.fetchImpl(itemUrl, {
          method: 'DELETE',
          headers,
          body: JSON.stringify(write.version === undefined ? {} : { version: write.version }),
        });
      default: {
        const _exhaustive: never = write.kind;
        return _exhaustive;
      }
    }
  }
}

/**
 * PROTOCOL.md says a 409 carries "the current document"; accept it bare or wrapped
 * (`current`, `document`, `details.current`), as servers tend to differ in the envelope.
 */
export function currentDocument(body: unknown): Doc | null {
  if (!body || typeof body !== 'object') return null;
  const b = body as Record<string, unknown>;
  for (const candidate of [
    b.current,
    b.document,
    (b.details as Record<string, unknown>)?.current,
  ]) {
    if (candidate && typeof candidate === 'object' && !Array.isArray(candidate)) {
      return candidate as Doc;
    }
  }
  return 'id' in b ? (b as Doc) : null;
}

function retryAfterMs(response: Response): number | undefined {
  const header = response.headers.get('retry-after');
  const seconds = header ? Number(header) : NaN;
  return Number.isFinite(seconds) ? seconds * 1000 : undefined;
}
