import {
  applyDecorators,
  createParamDecorator,
  ExecutionContext,
  SetMetadata,
  UseGuards,
} from '@nestjs/common';
import { ApiBearerAuth, ApiForbiddenResponse, ApiUnauthorizedResponse } from '@nestjs/swagger';
import type { AnyAbility } from '@casl/ability';
import { AUTHENTICATED_KEY } from '../realtime.constants';
import type { Principal } from '../realtime.types';
import { AuthGuard } from './auth.guard';

export interface AuthenticatedOptions {
  /** an action and subject the user must be able to perform, e.g. `['read', 'audit_logs']` */
  permission?: [action: string, subject: string];
}

/**
 * Requires a valid JWT (401 otherwise) and, with `permission`, a CASL right on a subject
 * type (403 otherwise). Per-document checks belong in the service.
 * @example `@Authenticated({ permission: ['read', 'audit_logs'] })`
 */
export function Authenticated(options: AuthenticatedOptions = {}) {
  return applyDecorators(
    SetMetadata(AUTHENTICATED_KEY, options),
    UseGuards(AuthGuard),
    ApiBearerAuth(),
    ApiUnauthorizedResponse({ description: 'no, invalid or expired token' }),
    ...(options.permission ? [ApiForbiddenResponse({ description: 'not permitted' })] : []),
  );
}

export interface AuthenticatedRequest {
  principal: Principal;
  ability: AnyAbility;
}

/** The authenticated user of the request. */
export const CurrentPrincipal = createParamDecorator(
  (_: unknown, ctx: ExecutionContext): Principal =>
    ctx.switchToHttp().getRequest<AuthenticatedRequest>().principal,
);

/** The CASL ability of the authenticated user. */
export const CurrentAbility = createParamDecorator(
  (_: unknown, ctx: ExecutionContext): AnyAbility =>
    ctx.switchToHttp().getRequest<AuthenticatedRequest>().ability,
);
