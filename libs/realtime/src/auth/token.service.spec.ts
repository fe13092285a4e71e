import jwt from 'jsonwebtoken';
import { TokenError, TokenService } from './token.service';

const SECRET = 'a-test-secret-of-some-length-0123456789';

function tokenFor(sub: string, expiresInSeconds: number, secret = SECRET): string {
  return jwt.sign({ sub, roles: ['member'], attrs: { department: 'eng' } }, secret, {
    algorithm: 'HS256',
    expiresIn: expiresInSeconds,
  });
}

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof TokenError) return e.reason;
    throw e;
  }
  return 'accepted';
}

describe('TokenService.verify', () => {
  let service: TokenService;
  let fullVerifications: jest.SpyInstance;
  beforeEach(() => {
    service = new TokenService({ auth: { secret: SECRET } } as never);
    fullVerifications = jest.spyOn((service as any).jwt, 'verify');
  });
  afterEach(() => jest.useRealTimers());

  it('verifies a token once and answers its repeats from memory, each with its own copy', () => {
    const token = tokenFor('carol', 600);
    const first = service.verify(token);
    first.roles.push('admin');
    first.attrs.department = 'sales';
    (first as { userId: string }).userId = 'mallory';
    const second = service.verify(token);
    expect(second).toEqual({
      userId: 'carol',
      roles: ['member'],
      attrs: { department: 'eng' },
      exp: expect.any(Number),
    });
    expect(fullVerifications).toHaveBeenCalledTimes(1);
  });

  it('refuses a remembered token once its exp has passed, and keeps refusing it', () => {
    jest.useFakeTimers({ now: new Date('2026-11-30T00:00:00Z') });
    const token = tokenFor('carol', 60);
    expect(service.verify(token).userId).toBe('carol');
    jest.setSystemTime(new Date('2026-11-30T00:00:59Z'));
    expect(reasonOf(() => service.verify(token))).toBe('accepted');
    jest.setSystemTime(new Date('2026-11-30T00:01:00Z'));
    expect(reasonOf(() => service.verify(token))).toBe('expired');
    expect(reasonOf(() => service.verify(token))).toBe('expired');
  });

  it('verifies in full any other text: a forged signature of a remembered token fails', () => {
    const token = tokenFor('carol', 600);
    service.verify(token);
    const [header, payload] = token.split('.');
    const forged = tokenFor('carol', 600, 'another-secret-of-some-length-98765');
    const mixed = `${header}.${payload}.${forged.split('.')[2]}`;
    expect(reasonOf(() => service.verify(mixed))).toBe('failed');
    expect(reasonOf(() => service.verify(`${token} `))).toBe('failed');
    expect(reasonOf(() => service.verify(undefined))).toBe('required');
  });

  it('remembers a bounded number of tokens, the most recently used', () => {
    const tokens = Array.from({ length: 1025 }, (_, i) => tokenFor(`user-${i}`, 600));
    service.verify(tokens[0]);
    for (const t of tokens.slice(2)) service.verify(t); // 1 + 1 023: full, nothing evicted
    service.verify(tokens[0]); // a hit: now the most recent
    service.verify(tokens[1]); // evicts the least recent (tokens[2])
    fullVerifications.mockClear();
    service.verify(tokens[0]);
    service.verify(tokens[1]);
    expect(fullVerifications).toHaveBeenCalledTimes(0);
    service.verify(tokens[2]);
    expect(fullVerifications).toHaveBeenCalledTimes(1);
  });
});
