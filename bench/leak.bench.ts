/**
 * Leak check: the real app (embedded SQLite, in this process) and LEAK_CYCLES WebSocket
 * clients that each connect, subscribe twice (one with initial data), and disconnect,
 * LEAK_CONCURRENCY at a time. Prints the heap after a warm-up and after the cycles (both
 * after a full GC), and the sizes of the connection registry and the subscription index,
 * which must be back to zero. Client and server share the heap: the figure covers both.
 *
 *   node --expose-gc -r ts-node/register/transpile-only -r tsconfig-paths/register bench/leak.bench.ts
 *
 * Env: LEAK_CYCLES (default 10 000), LEAK_WARMUP (default 500), LEAK_CONCURRENCY (default 20).
 */
import { Logger } from '@nestjs/common';
import { AuditService, ConnectionRegistry, SubscriptionsService } from '@app/realtime';
import jwt from 'jsonwebtoken';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { createApp } from '../src/app.factory';
import { loadConfig } from '../src/config/app.config';

const CYCLES = Number(process.env.LEAK_CYCLES ?? 10_000);
const WARMUP = Number(process.env.LEAK_WARMUP ?? 500);
const CONCURRENCY = Number(process.env.LEAK_CONCURRENCY ?? 20);

const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;

async function heap(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc (see the header of this file)');
  // a few rounds, with turns of the event loop between them, so finalizers run
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  return process.memoryUsage().heapUsed;
}

/** One client: connect, subscribe twice, disconnect; resolves once the socket closed. */
function cycle(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    let step = 0;
    ws.on('message', (raw) => {
      const msg = JSON.parse(raw.toString()) as { type: string; id?: string };
      if (msg.type === 'connection_established') {
        ws.send(
          JSON.stringify({ type: 'subscribe', id: 'a', data: { query: { collection: 'tasks' } } }),
        );
        ws.send(
          JSON.stringify({
            type: 'subscribe',
            id: 'b',
            data: { query: { collection: 'projects', includeInitialData: true } },
          }),
        );
      } else if (msg.id === 'a' || msg.id === 'b') {
        if (msg.type !== 'subscription_created') reject(new Error(`subscribe: ${raw.toString()}`));
        if (++step === 2) ws.close();
      }
    });
    ws.on('close', () => resolve());
    ws.on('error', reject);
  });
}

async function run(url: string, cycles: number): Promise<void> {
  let started = 0;
  const worker = async () => {
    while (started < cycles) {
      started++;
      await cycle(url);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'rt-leak-'));
  const secret = randomBytes(24).toString('hex');
  const config = loadConfig({
    NODE_ENV: 'test',
    DATA_DIR: dataDir,
    JWT_SECRET: secret,
    LOG_LEVEL: 'error',
    MAX_CONNECTIONS_PER_USER: '1000',
    CONNECTIONS_PER_IP_PER_MINUTE: '10000000',
  });
  const app = await createApp(config);
  await app.listen(0, '127.0.0.1');
  const port = (app.getHttpServer().address() as AddressInfo).port;
  const token = jwt.sign({ sub: 'leak', roles: ['admin'], attrs: {} }, secret, {
    algorithm: 'HS256',
    expiresIn: 3600,
  });
  const url = `ws://127.0.0.1:${port}/realtime/ws?access_token=${token}`;
  const registry = app.get(ConnectionRegistry);
  const subscriptions = app.get(SubscriptionsService);
  const settled = async () => {
    const deadline = Date.now() + 10_000;
    while (registry.size + subscriptions.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    // the audit buffer holds up to a second of entries: written out, so they do not count
    await app.get(AuditService).flush();
  };
  try {
    await run(url, WARMUP);
    await settled();
    const before = await heap();
    const started = Date.now();
    await run(url, CYCLES);
    await settled();
    const seconds = (Date.now() - started) / 1000;
    const after = await heap();
    const ok = registry.size === 0 && subscriptions.size === 0;
    const lines = [
      `cycles            ${CYCLES} (after ${WARMUP} warm-up), ${CONCURRENCY} at a time, ${seconds.toFixed(1)} s (${Math.round(CYCLES / seconds)}/s)`,
      `heap before       ${mb(before)}`,
      `heap after        ${mb(after)}`,
      `heap delta        ${mb(after - before)} (${((after - before) / CYCLES).toFixed(0)} bytes per cycle)`,
      `rss               ${mb(process.memoryUsage().rss)}`,
      `registry size     ${registry.size}`,
      `subscription index ${subscriptions.size}`,
      ok ? 'OK: everything released' : 'LEAK: connections or subscriptions remain',
    ];
    process.stdout.write(lines.join('\n') + '\n');
    if (!ok) process.exitCode = 1;
  } finally {
    await app.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  new Logger('leak.bench').error((e as Error).stack);
  process.exit(1);
});
