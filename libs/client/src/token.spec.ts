import { decodeJwtExp, TokenSource } from './token';

describe('tokens', () => {
  const jwt = (payload: object) =>
    `x.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`;

  it('decodes exp from a base64url payload', () => {
    expect(decodeJwtExp(jwt({ sub: 'ü', exp: 1_700_000_000 }))).toBe(1_700_000_000);
    expect(decodeJwtExp('garbage')).toBeUndefined();
  });

  it('never hands out a token that is about to expire', async () => {
    let now = 1_000_000_000_000;
    let issued = 0;
    const source = new TokenSource(
      () => jwt({ n: ++issued, exp: Math.floor(now / 1000) + 60 }),
      5_000,
      () => now,
    );
    const first = await source.get();
    expect(await source.get()).toBe(first);
    now += 56_000; // 4 s left: inside the leeway
    const second = await source.get();
    expect(second).not.toBe(first);
    source.invalidate();
    expect(await source.get()).not.toBe(second);
    expect(issued).toBe(3);
  });
});
