import { startTestApp, TestApp, USERS } from './utils/app';
import { metric } from './utils/wait';

/** METRICS_EVENT_LOOP_RESOLUTION_MS sets how often the event loop's delay is sampled. */
describe('event-loop delay sampling', () => {
  const apps: TestApp[] = [];
  afterAll(() => Promise.all(apps.map((a) => a.close())));

  const lagMin = async (t: TestApp) => {
    const r = await t.api(USERS.alice, 'GET', '/metrics');
    expect(r.status).toBe(200);
    return metric(r.body as string, 'nodejs_eventloop_lag_min_seconds');
  };

  it('samples every 10 ms by default, and every METRICS_EVENT_LOOP_RESOLUTION_MS when set', async () => {
    const byDefault = await startTestApp('sqlite');
    apps.push(byDefault);
    const coarse = await startTestApp('sqlite', { METRICS_EVENT_LOOP_RESOLUTION_MS: '200' });
    apps.push(coarse);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    // the histogram holds the raw intervals between samples: its minimum is about the
    // resolution (the two apps share one event loop, so a sample can only come late)
    const fine = await lagMin(byDefault);
    expect(fine).toBeGreaterThanOrEqual(0.009);
    expect(fine).toBeLessThan(0.1);
    expect(await lagMin(coarse)).toBeGreaterThanOrEqual(0.19);
  });
});
