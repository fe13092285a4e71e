import { monitorEventLoopDelay } from 'node:perf_hooks';
import { collectDefaultMetrics, Gauge, type Registry } from 'prom-client';

/**
 * prom-client's default metrics other than its event-loop delay ones (prom-client 15's
 * modules, by file name): its event-loop module samples every 10 ms, which is most of an
 * idle server's CPU, and reports raw intervals (see registerEventLoopLag).
 */
const DEFAULT_METRICS_BUT_LAG = [
  'processCpuTotal',
  'processStartTime',
  'osMemoryHeap',
  'processOpenFileDescriptors',
  'processMaxFileDescriptors',
  'processResources',
  'processHandles',
  'processRequests',
  'heapSizeAndUsed',
  'heapSpacesSizeAndUsed',
  'version',
  'gc',
];

type DefaultMetric = (registry: Registry, config: object) => void;

/**
 * Registers prom-client's default metrics on `registry`, with the event-loop delay ones
 * (`nodejs_eventloop_lag_*`) from registerEventLoopLag. Should a prom-client release move
 * its modules, prom-client's own set is registered instead, sampling every `resolutionMs`.
 */
export function registerDefaultMetrics(registry: Registry, resolutionMs: number): () => void {
  // processResources exists where process.getActiveResourcesInfo does (as prom-client checks)
  const names = DEFAULT_METRICS_BUT_LAG.filter(
    (name) => name !== 'processResources' || typeof process.getActiveResourcesInfo === 'function',
  );
  let modules: DefaultMetric[];
  try {
    modules = names.map(
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      (name) => require(`prom-client/lib/metrics/${name}`) as DefaultMetric,
    );
  } catch {
    collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: resolutionMs });
    return () => undefined;
  }
  for (const register of modules) register(registry, {});
  return registerEventLoopLag(registry, resolutionMs);
}

/**
 * prom-client's `nodejs_eventloop_lag_*` gauges (same names, help and aggregators), read as
 * how late the event loop ran a sample that was due: Node's delay monitor wakes the loop
 * every `resolutionMs` and records the whole interval since the last wake-up, which
 * prom-client reports as it is, so its figures never read below the resolution (about
 * 0.010 s on an idle server at its default). Here the resolution is taken off each
 * figure (never below 0), so they read about 0 while the loop keeps up, and the same at
 * any resolution; only the number of samples changes. The standard deviation is that of
 * the intervals, which the shift does not change.
 *
 * `nodejs_eventloop_lag_seconds` is prom-client's: a `setImmediate` timed at each scrape.
 * With no sample since the last scrape (scraped more often than sampled), the
 * histogram-based gauges keep their values. As with prom-client, each scrape resets the
 * histogram, and Node's monitor records nothing for the first interval after a reset: a
 * block that begins before the first sample after a scrape is not seen. Returns the
 * function that stops the sampling.
 */
export function registerEventLoopLag(registry: Registry, resolutionMs: number): () => void {
  const histogram = monitorEventLoopDelay({ resolution: resolutionMs });
  histogram.enable();
  const offsetNs = resolutionMs * 1e6;
  const late = (ns: number) => Math.max(0, ns - offsetNs) / 1e9;
  const gauge = (name: string, help: string, aggregator: 'average' | 'min' | 'max') =>
    new Gauge({ name, help, registers: [registry], aggregator });
  const lag: Gauge = new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds.',
    registers: [registry],
    aggregator: 'average',
    collect() {
      const start = process.hrtime.bigint();
      setImmediate(() => lag.set(Number(process.hrtime.bigint() - start) / 1e9));
      if (histogram.count === 0) return;
      min.set(late(histogram.min));
      max.set(late(histogram.max));
      mean.set(late(histogram.mean));
      stddev.set(histogram.stddev / 1e9);
      p50.set(late(histogram.percentile(50)));
      p90.set(late(histogram.percentile(90)));
      p99.set(late(histogram.percentile(99)));
      histogram.reset();
    },
  });
  const min = gauge(
    'nodejs_eventloop_lag_min_seconds',
    'The minimum recorded event loop delay.',
    'min',
  );
  const max = gauge(
    'nodejs_eventloop_lag_max_seconds',
    'The maximum recorded event loop delay.',
    'max',
  );
  const mean = gauge(
    'nodejs_eventloop_lag_mean_seconds',
    'The mean of the recorded event loop delays.',
    'average',
  );
  const stddev = gauge(
    'nodejs_eventloop_lag_stddev_seconds',
    'The standard deviation of the recorded event loop delays.',
    'average',
  );
  const p50 = gauge(
    'nodejs_eventloop_lag_p50_seconds',
    'The 50th percentile of the recorded event loop delays.',
    'average',
  );
  const p90 = gauge(
    'nodejs_eventloop_lag_p90_seconds',
    'The 90th percentile of the recorded event loop delays.',
    'average',
  );
  const p99 = gauge(
    'nodejs_eventloop_lag_p99_seconds',
    'The 99th percentile of the recorded event loop delays.',
    'average',
  );
  return () => histogram.disable();
}
