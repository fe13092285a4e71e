import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { AuditService } from '../audit/audit.service';
import { HttpRequest, pathOf } from '../common/http-objects';
import { ForbiddenError, UnauthorizedError } from '../common/realtime.errors';
import { AUTHENTICATED_KEY } from '../realtime.constants';
import { AbilityService } from './ability.service';
import type { AuthenticatedOptions } from './authenticated.decorator';
import { RequestContext } from './request-context';
import { TokenError, TokenService } from './token.service';

/** 401 for a missing or bad token, 403 for a missing permission — never confused. */
@Injectable()
export class AuthGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly tokens: TokenService,
    private readonly abilities: AbilityService,
    private readonly audit: AuditService,
  ) {}

  canActivate(context: ExecutionContext): boolean {
    const options =
      this.reflector.getAllAndOverride<AuthenticatedOptions>(AUTHENTICATED_KEY, [
        context.getHandler(),
        context.getClass(),
      ]) ?? {};
    const req = context.switchToHttp().getRequest<HttpRequest & Record<string, unknown>>();
    let principal;
    try {
      principal = this.tokens.verify(this.tokens.extract(req));
    } catch (e) {
      const message = e instanceof TokenError ? e.message : 'authentication failed';
      this.audit.record({
        action: 'auth_failed',
        outcome: 'failure',
        details: { transport: 'http', path: pathOf(req), reason: message },
        ipAddress: req.ip ?? null,
        userAgent: req.headers['user-agent'] ?? null,
      });
      throw new UnauthorizedError(message);
    }
    const ability = this.abilities.forPrincipal(principal);
    req.principal = principal;
    req.ability = ability;
    RequestContext.setPrincipal(principal);
    if (options.permission && !ability.can(options.permission[0], options.permission[1])) {
      throw new ForbiddenError(
        `not permitted to ${options.permission[0]} ${options.permission[1]}`,
      );
    }
    return true;
  }
}
