import { Injectable, OnModuleDestroy } from '@nestjs/common';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerDefaultMetrics } from './event-loop-lag';
import { InjectRealtimeOptions } from '../realtime.module-definition';
import type { RealtimeModuleOptions } from '../realtime.options';

/** RealtimeModuleOptions.metrics.eventLoopResolutionMs's default */
export const DEFAULT_EVENT_LOOP_RESOLUTION_MS = 100;

/** The Prometheus metrics of PROTOCOL.md "Metrics", on a registry of our own. */
@Injectable()
export class MetricsService implements OnModuleDestroy {
  readonly registry = new Registry();
  readonly connections = new Gauge({
    name: 'realtime_connections',
    help: 'Open realtime connections',
    labelNames: ['transport'] as const,
    registers: [this.registry],
  });
  readonly subscriptions = new Gauge({
    name: 'realtime_subscriptions',
    help: 'Live subscriptions',
    registers: [this.registry],
  });
  readonly changes = new Counter({
    name: 'realtime_changes_total',
    help: 'Committed changes routed by this node',
    registers: [this.registry],
  });
  readonly deliveries = new Counter({
    name: 'realtime_deliveries_total',
    help: 'Changes delivered to subscriptions',
    registers: [this.registry],
  });
  readonly dropped = new Counter({
    name: 'realtime_dropped_connections_total',
    help: 'Connections closed by the server, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly stopSampling: () => void;
  readonly latency = new Histogram({
    name: 'realtime_delivery_latency_seconds',
    help: 'Commit to frame written',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  constructor(@InjectRealtimeOptions() options: RealtimeModuleOptions) {
    this.connections.set({ transport: 'websocket' }, 0);
    this.connections.set({ transport: 'sse' }, 0);
    this.stopSampling = registerDefaultMetrics(
      this.registry,
      options.metrics?.eventLoopResolutionMs ?? DEFAULT_EVENT_LOOP_RESOLUTION_MS,
    );
  }

  onModuleDestroy(): void {
    this.stopSampling();
  }
}
