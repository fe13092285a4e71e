import { HttpException, HttpStatus } from '@nestjs/common';
import type { ErrorCode, ErrorDetail } from '../realtime.types';

/** A domain error with a fixed HTTP status and a PROTOCOL.md error code. */
export class RealtimeHttpException extends HttpException {
  constructor(
    status: HttpStatus,
    readonly code: string,
    message: string,
    readonly details?: ErrorDetail[],
  ) {
    super({ statusCode: status, code, message, ...(details ? { details } : {}) }, status);
  }
}

export class UnauthorizedError extends RealtimeHttpException {
  constructor(message = 'authentication required') {
    super(HttpStatus.UNAUTHORIZED, 'unauthorized', message);
  }
}

export class ForbiddenError extends RealtimeHttpException {
  constructor(message = 'forbidden') {
    super(HttpStatus.FORBIDDEN, 'forbidden', message);
  }
}

export class NotFoundError extends RealtimeHttpException {
  constructor(message = 'not found') {
    super(HttpStatus.NOT_FOUND, 'not_found', message);
  }
}

export class ValidationError extends RealtimeHttpException {
  constructor(details: ErrorDetail[], code = 'validation_failed', message = 'invalid request') {
    super(HttpStatus.BAD_REQUEST, code, message, details);
  }
}

/** An error on a realtime connection (WebSocket `error` message, or SSE REST answer). */
export class RealtimeError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: ErrorDetail[],
  ) {
    super(message);
  }
}

/** An HTTP error whose body is given as is (a 409 answers with the current document). */
export class RawBodyHttpException extends HttpException {
  constructor(body: Record<string, unknown>, status: HttpStatus) {
    super(body, status);
  }
}
