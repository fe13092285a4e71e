import { Body, Controller, HttpCode, Inject, NotFoundException, Post } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { TokenService, UnauthorizedError, ValidationError, zodDetails } from '@app/realtime';
import { APP_CONFIG, AppConfig } from '../config/app.config';
import { demoPassword, DEMO_USERS } from './demo-users';

const Login = z
  .object({ username: z.string().min(1).max(100), password: z.string().min(1).max(200) })
  .strict();

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** `POST /auth/login` for the demo users (only when DEMO_USERS is on). */
@ApiTags('auth')
@Controller('auth')
export class AuthController {
  constructor(
    private readonly tokens: TokenService,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
  ) {}

  @Post('login')
  @HttpCode(200)
  @ApiOperation({ summary: 'Demo login: {username, password} → {accessToken, expiresIn}' })
  login(@Body() body: unknown) {
    if (!this.config.demoUsers) throw new NotFoundException('demo users are off');
    const parsed = Login.safeParse(body ?? {});
    if (!parsed.success) throw new ValidationError(zodDetails(parsed.error));
    const { username, password } = parsed.data;
    const user = DEMO_USERS.find((u) => u.username === username);
    if (!user || !same(password, demoPassword(user.username))) {
      throw new UnauthorizedError('unknown user or wrong password');
    }
    return this.tokens.sign(
      { userId: user.username, roles: [...user.roles], attrs: { ...user.attrs } },
      this.config.jwt.ttlSeconds,
    );
  }
}
