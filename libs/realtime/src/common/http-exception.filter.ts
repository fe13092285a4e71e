import { ArgumentsHost, Catch, ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import type { Response } from 'express';
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
 */
@Catch()
export class HttpErrorFilter implements ExceptionFilter {
  private readonly logger = new Logger(HttpErrorFilter.name);

  catch(exception: unknown, host: ArgumentsHost): void {
    if (host.getType() !== 'http') return;
    const res = host.switchToHttp().getResponse<Response>();
    if (res.headersSent) {
      res.end();
      return;
    }
    const { status, body } = this.toBody(exception);
    res.status(status).json(body);
  }

  private toBody(exception: unknown): { status: number; body: Record<string, unknown> } {
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
    // body-parser errors carry a status and a type
    const e = exception as { status?: number; statusCode?: number; type?: string };
    const status = e?.status ?? e?.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      const message =
        e.type === 'entity.parse.failed'
          ? 'malformed JSON body'
          : e.type === 'entity.too.large'
            ? 'request body too large'
            : 'bad request';
      return {
        status,
        body: { statusCode: status, code: CODES[status] ?? 'bad_request', message },
      };
    }
    this.logger.error(exception instanceof Error ? exception.stack : String(exception));
    return { status: 500, body: { statusCode: 500, code: 'internal', message: 'internal error' } };
  }
}
