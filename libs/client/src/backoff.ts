export interface BackoffOptions {
  /** @default 500 */
  initialDelayMs?: number;
  /** @default 30000 */
  maxDelayMs?: number;
  /** @default 2 */
  factor?: number;
  /**
   * Share of each delay that is random, 0..1: many clients dropped by one server restart
   * must not come back in lock-step.
   * @default 0.5
   */
  jitter?: number;
}

/** Exponential back-off with jitter ("equal jitter": never less than half the step). */
export class Backoff {
  private attempt = 0;
  private readonly initial: number;
  private readonly max: number;
  private readonly factor: number;
  private readonly jitter: number;

  constructor(
    options: BackoffOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.initial = options.initialDelayMs ?? 500;
    this.max = options.maxDelayMs ?? 30_000;
    this.factor = options.factor ?? 2;
    this.jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5));
  }

  get attempts(): number {
    return this.attempt;
  }

  /** The delay before the next attempt; each call moves one step further. */
  next(): number {
    const step = Math.min(this.max, this.initial * this.factor ** this.attempt);
    this.attempt++;
    return Math.round(step * (1 - this.jitter) + step * this.jitter * this.random());
  }

  /** Skips ahead, for closes that ask clients to stay away longer (4008). */
  jumpToMax(): void {
    this.attempt = Math.max(
      this.attempt,
      Math.ceil(Math.log(this.max / this.initial) / Math.log(this.factor)),
    );
  }

  reset(): void {
    this.attempt = 0;
  }
}
