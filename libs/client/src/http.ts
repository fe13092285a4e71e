import type { RealtimeErrorInfo } from './types';

/** Reads the server's `{statusCode, code, message, details}` error body, whatever it holds. */
export async function readErrorInfo(response: Response): Promise<RealtimeErrorInfo> {
  const fallback: RealtimeErrorInfo = {
    code: 'http_error',
    message: `HTTP ${response.status}`,
    status: response.status,
  };
  try {
    const body = (await response.json()) as Partial<RealtimeErrorInfo> | null;
    if (!body || typeof body !== 'object') return fallback;
    return {
      code: typeof body.code === 'string' ? body.code : 'http_error',
      message: typeof body.message === 'string' ? body.message : fallback.message,
      details: body.details,
      status: response.status,
    };
  } catch {
    return fallback;
  }
}
