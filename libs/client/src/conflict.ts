import type { Doc, PendingWrite } from './types';

/**
 * Decides the outcome of a write the server refused with 409 (stale `version`).
 * `base` is the document as this client saw it when the write was made, `local` is `base`
 * with the client's change applied, `server` is the current document.
 */
export type MergeFunction = (base: Doc | null, local: Doc, server: Doc) => Doc;

/**
 * - `server-wins`: drop the local change; the cache takes the server's document.
 * - `client-wins`: apply the same patch again on top of the server's current version.
 * - a merge function (or `{ merge }`): its result, sent as a patch of the fields that differ
 *   from the server's document.
 * @default 'server-wins'
 */
export type ConflictStrategy =
  'server-wins' | 'client-wins' | MergeFunction | { merge: MergeFunction };

export type ConflictResolution =
  { action: 'accept-server' } | { action: 'retry'; write: PendingWrite };

/** Fields the server manages; a merge never sends them back. */
export const SERVER_MANAGED_FIELDS: readonly string[] = ['id', 'version', 'createdAt', 'updatedAt'];

export function strategyName(strategy: ConflictStrategy): 'server-wins' | 'client-wins' | 'merge' {
  return typeof strategy === 'string' ? strategy : 'merge';
}

/**
 * Pure: given the refused write and the server's current document, says what to do next.
 * A retry carries the server's version so the next attempt is not refused again for the
 * same reason; the caller bounds the number of attempts.
 */
export function resolveConflict(
  write: PendingWrite,
  server: Doc | null,
  strategy: ConflictStrategy,
): ConflictResolution {
  // Deleted on the server: nothing left to update or delete, whatever the strategy.
  if (server === null || write.kind === 'create') return { action: 'accept-server' };
  const serverVersion = typeof server.version === 'number' ? server.version : undefined;
  if (strategy === 'server-wins') return { action: 'accept-server' };
  if (strategy === 'client-wins') {
    return { action: 'retry', write: { ...write, version: serverVersion, base: server } };
  }
  // A merge cannot express "deleted", and deleting what someone just changed would throw
  // their change away unseen, so a delete under a merge strategy yields to the server.
  if (write.kind === 'delete') return { action: 'accept-server' };
  const merge = typeof strategy === 'function' ? strategy : strategy.merge;
  const base = write.base ?? null;
  const local = { ...(base ?? server), ...write.data };
  const merged = merge(base, local, server);
  const patch = diff(server, merged);
  if (Object.keys(patch).length === 0) return { action: 'accept-server' };
  return {
    action: 'retry',
    write: { ...write, data: patch, version: serverVersion, base: server },
  };
}

/** The fields of `next` that differ from `current`, server-managed fields left out. */
export function diff(current: Doc, next: Doc): Doc {
  const patch: Doc = {};
  for (const [key, value] of Object.entries(next)) {
    if (SERVER_MANAGED_FIELDS.includes(key)) continue;
    if (JSON.stringify(current[key]) !== JSON.stringify(value)) patch[key] = value;
  }
  return patch;
}

/**
 * A merge that keeps every field the client changed (relative to `base`) unless the
 * server changed the same field too, in which case the server's value stays.
 * @example client.collection('tasks', { conflict: fieldLevelMerge })
 */
export const fieldLevelMerge: MergeFunction = (base, local, server) => {
  const merged: Doc = { ...server };
  for (const [key, value] of Object.entries(local)) {
    const before = base?.[key];
    const clientChanged = JSON.stringify(before) !== JSON.stringify(value);
    const serverChanged = JSON.stringify(before) !== JSON.stringify(server[key]);
    if (clientChanged && !serverChanged) merged[key] = value;
  }
  return merged;
};
