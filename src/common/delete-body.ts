import { z } from 'zod';
import { ValidationError, zodDetails } from '@app/realtime';

const DeleteBody = z.object({ version: z.number().int().min(1).optional() }).strict();

/** The optional `{"version"}` body of a DELETE. */
export function parseDeleteBody(body: unknown): number | undefined {
  if (
    body === undefined ||
    (typeof body === 'object' &&
      body !== null &&
      !Array.isArray(body) &&
      Object.keys(body).length === 0)
  ) {
    return undefined;
  }
  const parsed = DeleteBody.safeParse(body);
  if (!parsed.success) throw new ValidationError(zodDetails(parsed.error));
  return parsed.data.version;
}
