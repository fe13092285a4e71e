/** The `getToken` option: returns a JWT, fetching a fresh one when asked to. */
export type TokenProvider = (context: { forceRefresh: boolean }) => string | Promise<string>;

/** Reads `exp` (seconds) from a JWT payload without verifying it: the server verifies. */
export function decodeJwtExp(token: string): number | undefined {
  const part = token.split('.')[1];
  if (!part) return undefined;
  try {
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const payload = JSON.parse(decodeBase64(padded)) as { exp?: unknown };
    return typeof payload.exp === 'number' ? payload.exp : undefined;
  } catch {
    return undefined;
  }
}

function decodeBase64(value: string): string {
  const binary = atob(value);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/**
 * Hands out tokens and knows when they run out. A token is reused only while it has more
 * than `leewayMs` left, so nothing ever sends a token that expires in flight, and a tab
 * that wakes up from standby asks `getToken` again instead of replaying a dead token.
 */
export class TokenSource {
  private token: string | null = null;
  private exp: number | undefined;
  private inflight: Promise<string> | null = null;

  constructor(
    private readonly provider: TokenProvider,
    private readonly leewayMs = 5_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** ms until the current token expires, or undefined when it has no `exp`. */
  msUntilExpiry(): number | undefined {
    return this.exp === undefined ? undefined : this.exp * 1000 - this.now();
  }

  isFresh(): boolean {
    if (!this.token) return false;
    const left = this.msUntilExpiry();
    return left === undefined || left > this.leewayMs;
  }

  async get(forceRefresh = false): Promise<string> {
    if (!forceRefresh && this.isFresh()) return this.token as string;
    if (this.inflight) return this.inflight;
    this.inflight = (async () => {
      try {
        const token = await this.provider({ forceRefresh: forceRefresh || this.token !== null });
        if (typeof token !== 'string' || token === '') {
          throw new Error('getToken() returned no token');
        }
        this.token = token;
        this.exp = decodeJwtExp(token);
        return token;
      } finally {
        this.inflight = null;
      }
    })();
    return this.inflight;
  }

  /** Forget the token (the server refused it), so the next `get` asks for a new one. */
  invalidate(): void {
    this.token = null;
    this.exp = undefined;
  }
}
