import { startTestApp, TestApp, USERS } from './utils/app';
import { metric } from './utils/wait';

/**
 * `nodejs_eventloop_lag_*`: how late the event loop ran a due sample, sampled every
 * METRICS_EVENT_LOOP_RESOLUTION_MS (100 by default).
 */
describe('event-loop delay sampling', () => {
  const apps: TestApp[] = [];
  afterAll(() => Promise.all(apps.map((a) => a.close())));

  const lag = async (t: TestApp) => {
    const r = await t.api(USERS.alice, 'GET', '/metrics');
    expect(r.status).toBe(200);
    const text = r.body as string;
    return {
      min: metric(text, 'nodejs_eventloop_lag_min_seconds'),
      max: metric(text, 'nodejs_eventloop_lag_max_seconds'),
      p50: metric(text, 'nodejs_eventloop_lag_p50_seconds'),
    };
  };
  /** Keeps the event loop (which the test shares with the apps) busy for `ms`. */
  const block = (ms: number) => {
    const end = Date.now() + ms;
    while (Date.now() < end);
  };
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('reads about 0 while the loop keeps up and the length of a block when it does not, at any resolution; a coarse one misses short blocks', async () => {
    const byDefault = await startTestApp('sqlite');
    apps.push(byDefault);
    const fine = await startTestApp('sqlite', { METRICS_EVENT_LOOP_RESOLUTION_MS: '10' });
    apps.push(fine);
    const coarse = await startTestApp('sqlite', { METRICS_EVENT_LOOP_RESOLUTION_MS: '60000' });
    apps.push(coarse);
    await sleep(1200);
    for (const t of [byDefault, fine, coarse]) await lag(t); // a fresh window for each
    await sleep(1200);
    // idle: the samples ran on time (prom-client's own figures would read the resolution)
    for (const t of [byDefault, fine]) {
      const idle = await lag(t);
      expect(idle.min).toBeLessThan(0.005);
      expect(idle.p50).toBeLessThan(0.005);
    }

    // a 400 ms block: a sample was due within its first 100 ms, so it ran at least 300 ms
    // late at either resolution; the first sample at 60 s is not due yet. (Node's monitor
    // records nothing for the first interval after a scrape resets it: the block waits a
    // few samples.)
    await sleep(300);
    block(400);
    await sleep(250);
    const [d, f, c] = [await lag(byDefault), await lag(fine), await lag(coarse)];
    expect(d.max).toBeGreaterThanOrEqual(0.29);
    expect(d.max).toBeLessThan(0.45);
    expect(f.max).toBeGreaterThanOrEqual(0.38);
    expect(f.max).toBeLessThan(0.45);
    expect(c.max).toBe(0);
  });
});
