import { monitorEventLoopDelay } from 'node:perf_hooks';
import { collectDefaultMetrics, Gauge, type Registry } from 'prom-client';

type DefaultMetric = (registry: Registry, config: object) => void;

/**
 * Registers prom-client's default metrics on `registry`, with the event-loop delay ones
 * (`nodejs_eventloop_lag_*`) from registerEventLoopLag. Should a prom-client release move
 * its modules, prom-client's own set is registered instead, sampling every `resolutionMs`.
 */
export function registerDefaultMetrics(registry: Registry, resolutionMs: number): () => void {
  // prom-client's own list of its default metric modules (by file name), which already
  // leaves out those this Node lacks; its event-loop module samples every 10 ms and reports
  // raw intervals (see registerEventLoopLag)
  const names = collectDefaultMetrics.metricsList.filter((name) => name !== 'eventLoopLag');
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
  // prom-client's names, help texts and aggregators, each with its figure of the histogram
  type Histogram = typeof histogram;
  const figures: (readonly [
    string,
    string,
    'average' | 'min' | 'max',
    (h: Histogram) => number,
  ])[] = [
    ['min', 'The minimum recorded event loop delay.', 'min', (h) => late(h.min)],
    ['max', 'The maximum recorded event loop delay.', 'max', (h) => late(h.max)],
    ['mean', 'The mean of the recorded event loop delays.', 'average', (h) => late(h.mean)],
    [
      'stddev',
      'The standard deviation of the recorded event loop delays.',
      'average',
      (h) => h.stddev / 1e9,
    ],
    ...[50, 90, 99].map(
      (p) =>
        [
          `p${p}`,
          `The ${p}th percentile of the recorded event loop delays.`,
          'average',
          (h: Histogram) => late(h.percentile(p)),
        ] as const,
    ),
  ];
  // registered first: a scrape reads the metrics in order, and this one's collect sets the
  // others
  const lag: Gauge = new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds.',
    registers: [registry],
    aggregator: 'average',
    collect() {
      const start = process.hrtime.bigint();
      setImmediate(() => lag.set(Number(process.hrtime.bigint() - start) / 1e9));
      if (histogram.count === 0) return;
      for (const { gauge, read } of gauges) gauge.set(read(histogram));
      histogram.reset();
    },
  });
  const gauges = figures.map(([name, help, aggregator, read]) => ({
    gauge: new Gauge({
      name: `nodejs_eventloop_lag_${name}_seconds`,
      help,
      registers: [registry],
      aggregator,
    }),
    read,
  }));
  return () => histogram.disable();
}
