import { AsyncLocalStorage } from 'node:async_hooks';
import type { Principal } from '../realtime.types';

interface ContextStore {
  principal?: Principal;
}

const storage = new AsyncLocalStorage<ContextStore>();

/**
 * Carries the acting user through a request (or any unit of work) so that change capture
 * can record who made a change without threading it through every call.
 *
 * Opt-in (`RealtimeModule.forRoot({ requestContext: true })` wraps every HTTP request in
 * one): on Node 20 an AsyncLocalStorage in use makes every promise of the process pay for
 * context propagation (−15 % on the ORM write path here). Without it, name the actor where
 * the write happens: `TransactionRunner.transaction(fn, { actor })`.
 */
export const RequestContext = {
  /** Runs `fn` in a fresh context; the HTTP middleware wraps every request in one. */
  run<T>(fn: () => T, principal?: Principal): T {
    return storage.run({ principal }, fn);
  },
  /** Sets the acting user of the current context, if there is one (the auth guard does this). */
  setPrincipal(principal: Principal): void {
    const store = storage.getStore();
    if (store) store.principal = principal;
  },
  principal(): Principal | undefined {
    return storage.getStore()?.principal;
  },
};
