import { Logger } from '@nestjs/common';
import Redis from 'ioredis';
import type { ChangeRecord } from '../realtime.types';
import type { ChangeBus } from './change-bus';

const CHANNEL = 'realtime:changes';

/**
 * Redis pub/sub between nodes. A node delivers its own changes locally at once (so a
 * Redis outage never stops local delivery) and publishes them for the other nodes; it
 * ignores its own messages coming back. Pub/sub keeps nothing: after a reconnect the
 * change feed catches up from the change log.
 */
export class RedisChangeBus implements ChangeBus {
  private readonly logger = new Logger(RedisChangeBus.name);
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly handlers: ((changes: ChangeRecord[]) => void)[] = [];
  private readonly resync: (() => void)[] = [];
  private readonly nodeId = `${process.pid}-${Math.random().toString(36).slice(2)}`;
  private everConnected = false;

  /** Refuses to start when Redis cannot be reached (say what to fix, not a stack). */
  async onModuleInit(): Promise<void> {
    const ready = (client: Redis) =>
      client.status === 'ready'
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('timeout')), 5000);
            client.once('ready', () => {
              clearTimeout(timer);
              resolve();
            });
          });
    try {
      await Promise.all([ready(this.pub), ready(this.sub)]);
    } catch {
      await this.close();
      throw new Error(`REDIS_URL is set but Redis at ${this.where} did not answer within 5 s`);
    }
  }

  async onApplicationShutdown(): Promise<void> {
    await this.close();
  }

  private readonly where: string;

  constructor(url: string) {
    const parsed = new URL(url);
    this.where = `${parsed.hostname}:${parsed.port || 6379}`;
    const options = { lazyConnect: false, maxRetriesPerRequest: 1, enableOfflineQueue: false };
    this.pub = new Redis(url, options);
    this.sub = new Redis(url, { ...options, enableOfflineQueue: true });
    for (const client of [this.pub, this.sub]) {
      client.on('error', (e) => this.logger.warn(`redis: ${e.message}`));
    }
    this.sub.on('ready', () => {
      if (this.everConnected) this.resync.forEach((f) => f());
      this.everConnected = true;
    });
    void this.sub
      .subscribe(CHANNEL)
      .catch((e) => this.logger.warn(`redis subscribe: ${e.message}`));
    this.sub.on('messageBuffer', (_channel: Buffer, message: Buffer) => this.onMessage(message));
  }

  private onMessage(message: Buffer): void {
    const text = message.toString();
    const sep = text.indexOf('\n');
    if (sep === -1 || text.slice(0, sep) === this.nodeId) return;
    let changes: ChangeRecord[];
    try {
      changes = JSON.parse(text.slice(sep + 1));
    } catch {
      return;
    }
    for (const handler of this.handlers) handler(changes);
  }

  publish(changes: ChangeRecord[]): void {
    for (const handler of this.handlers) handler(changes);
    if (this.pub.status !== 'ready') return; // the others catch up from the log
    this.pub.publish(CHANNEL, `${this.nodeId}\n${JSON.stringify(changes)}`).catch((e) => {
      this.logger.warn(
        `redis publish failed (other nodes will catch up from the log): ${e.message}`,
      );
    });
  }

  subscribe(handler: (changes: ChangeRecord[]) => void): void {
    this.handlers.push(handler);
  }

  onResync(handler: () => void): void {
    this.resync.push(handler);
  }

  async health(): Promise<string | null> {
    if (this.pub.status !== 'ready' || this.sub.status !== 'ready')
      return `redis ${this.pub.status}`;
    try {
      await this.pub.ping();
      return null;
    } catch (e) {
      return (e as Error).message;
    }
  }

  async close(): Promise<void> {
    this.pub.disconnect();
    this.sub.disconnect();
  }
}
