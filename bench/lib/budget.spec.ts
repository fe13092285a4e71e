import { childSettings } from './budget';

describe('childSettings', () => {
  it('leaves the child benches at their defaults when their full length fits', () => {
    expect(childSettings(10 * 60_000, {})).toEqual({ routing: {}, writePath: {}, scale: 1 });
    expect(childSettings(130_000, {})).toEqual({ routing: {}, writePath: {}, scale: 1 });
  });

  it('shortens both alike when less is left, down to a floor', () => {
    // 70 s left: 60 s for 120 s of benches, half of each
    expect(childSettings(70_000, {})).toEqual({
      routing: { ROUTING_RUNS: '7' },
      writePath: { WRITE_BENCH_MS: '1500' },
      scale: 0.5,
    });
    const none = childSettings(5_000, {});
    expect(none.routing).toEqual({ ROUTING_RUNS: '5' });
    expect(none.writePath).toEqual({ WRITE_BENCH_MS: '1000' });
  });

  it('keeps settings given in the environment', () => {
    const fit = childSettings(70_000, { ROUTING_RUNS: '3', WRITE_BENCH_MS: '2000' });
    expect(fit.routing).toEqual({});
    expect(fit.writePath).toEqual({});
    expect(fit.scale).toBe(0.5);
  });
});
