import type { ZodError } from 'zod';
import type { ErrorDetail } from '../realtime.types';

/** Turns a zod error into PROTOCOL.md `details`: `[{ path: 'a.0.b', message }]`. */
export function zodDetails(error: ZodError): ErrorDetail[] {
  return error.issues.map((issue) => {
    const keys = issue.code === 'unrecognized_keys' ? issue.keys : [];
    const base = issue.path.join('.');
    if (keys.length > 0) {
      return {
        path: keys.map((k) => (base ? `${base}.${k}` : k)).join(', '),
        message: `unknown field${keys.length > 1 ? 's' : ''}: ${keys.join(', ')}`,
      };
    }
    return { path: base, message: issue.message };
  });
}
