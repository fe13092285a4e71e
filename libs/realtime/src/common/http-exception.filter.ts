import { ArgumentsHost, Catch, ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import { HttpResponse, rawResponse, sendJson } from './http-objects';
import { RawBodyHttpException } from './realtime.errors';

const CODES: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'rate_limited',
};

/**
 * Answers every HTTP error as `{statusCode, code, message, details?}` and never leaks an
 * internal error's text. Body-parser errors (malformed JSON, too large) arrive here too.
 * Works on either HTTP adapter.
 */
@Catch()
export class HttpErrorFilter implements ExceptionFilter {
  private readonly logger = new Logger(HttpErrorFilter.name);

  catch(exception: unknown, host: ArgumentsHost): void {
    if (host.getType() !== 'http') return;
    const res = host.switchToHttp().getResponse<HttpResponse>();
    const raw = rawResponse(res);
    if (raw.headersSent) {
      raw.end();
      return;
    }
    const { status, body } = httpErrorBody(exception);
    if (status === 500 && !(exception instanceof HttpException)) {
      this.logger.error(exception instanceof Error ? exception.stack : String(exception));
    }
    sendJson(res, status, body);
  }
}

/**
 * The answer HttpErrorFilter gives to `exception`: its status and its JSON body. Also for
 * code that answers errors before Nest's routing (an Express error middleware).
 */
export function httpErrorBody(exception: unknown): {
  status: number;
  body: Record<string, unknown>;
} {
  if (exception instanceof RawBodyHttpException) {
    return {
      status: exception.getStatus(),
      body: exception.getResponse() as Record<string, unknown>,
    };
  }
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    const response = exception.getResponse();
    if (typeof response === 'object' && response !== null && 'code' in response) {
      return { status, body: response as Record<string, unknown> };
    }
    const message =
      typeof response === 'string'
        ? response
        : String((response as { message?: unknown }).message ?? exception.message);
    return { status, body: { statusCode: status, code: CODES[status] ?? 'error', message } };
  }
  // body-parser's errors carry a status and a type; Fastify's own reach the filter as
  // HttpExceptions (Nest maps them), but a `frameworkErrors` handler may pass one as it is
  const e = exception as { status?: number; statusCode?: number; type?: string };
  const status = e?.status ?? e?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const message =
      e.type === 'entity.parse.failed'
        ? 'malformed JSON body'
        : e.type === 'entity.too.large'
          ? 'request body too large'
          : e.type === 'charset.unsupported' || e.type === 'encoding.unsupported'
            ? 'unsupported request body encoding'
            : 'bad request';
    return {
      status,
      body: { statusCode: status, code: CODES[status] ?? 'bad_request', message },
    };
  }
  return { status: 500, body: { statusCode: 500, code: 'internal', message: 'internal error' } };
}
