import type { QueueStorage } from './offline-queue';
import type { PendingWrite } from './types';

const STORE = 'writes';

/**
 * The browser's queue storage: one IndexedDB database per client namespace, shared by the
 * tabs of the origin, so a write made offline survives a reload and is sent by whichever
 * tab leads next.
 */
export class IndexedDbQueueStorage implements QueueStorage {
  private opening: Promise<IDBDatabase> | null = null;

  constructor(
    private readonly dbName: string,
    private readonly factory: IDBFactory = globalThis.indexedDB,
  ) {}

  async load(): Promise<PendingWrite[]> {
    const db = await this.open();
    return request<PendingWrite[]>(db.transaction(STORE, 'readonly').objectStore(STORE).getAll());
  }

  async put(write: PendingWrite): Promise<void> {
    const db = await this.open();
    const tx = db.transaction(STORE, 'readwrite');
    tx.objectStore(STORE).put(write);
    await done(tx);
  }

  async remove(opId: string): Promise<void> {
    const db = await this.open();
    const tx = db.transaction(STORE, 'readwrite');
    tx.objectStore(STORE).delete(opId);
    await done(tx);
  }

  private open(): Promise<IDBDatabase> {
    this.opening ??= new Promise<IDBDatabase>((resolve, reject) => {
      const req = this.factory.open(this.dbName, 1);
      req.onupgradeneeded = () => {
        if (!req.result.objectStoreNames.contains(STORE)) {
          req.result.createObjectStore(STORE, { keyPath: 'opId' });
        }
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error ?? new Error(`cannot open IndexedDB ${this.dbName}`));
    });
    return this.opening;
  }
}

function request<T>(req: IDBRequest): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    req.onsuccess = () => resolve(req.result as T);
    req.onerror = () => reject(req.error ?? new Error('IndexedDB request failed'));
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });
}
