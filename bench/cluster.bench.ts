/**
 * Two nodes versus one (issue 6): end-to-end deliveries/s and commit-to-receive latency
 * with the subscribers spread over the nodes and the writes going through all of them,
 * on the machine's PostgreSQL and Redis. Prints figures; asserts nothing.
 *
 *   node -r ts-node/register/transpile-only -r tsconfig-paths/register bench/cluster.bench.ts
 *
 * Env: CLUSTER_BENCH_CLIENTS (default 1000), CLUSTER_BENCH_WRITES (default 200, paced
 * CLUSTER_BENCH_INTERVAL_MS apart, default 20), TEST_PG_URL, TEST_REDIS_URL.
 */
import jwt from 'jsonwebtoken';
import WebSocket from 'ws';
import { randomBytes } from 'node:crypto';
import { createPgDatabase, REDIS_URL } from '../test/utils/services';
import { startNode, NodeProcess } from '../test/utils/node-process';

const CLIENTS = Number(process.env.CLUSTER_BENCH_CLIENTS ?? 1000);
const WRITES = Number(process.env.CLUSTER_BENCH_WRITES ?? 200);
const INTERVAL_MS = Number(process.env.CLUSTER_BENCH_INTERVAL_MS ?? 20);

interface Result {
  nodes: number;
  deliveries: number;
  expected: number;
  perSecond: number;
  p50: number;
  p99: number;
  max: number;
}

const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;

async function run(nodeCount: number): Promise<Result> {
  const { url, drop } = await createPgDatabase();
  const secret = randomBytes(24).toString('hex');
  const env = {
    DATABASE_URL: url,
    REDIS_URL,
    JWT_SECRET: secret,
    MAX_CONNECTIONS_PER_USER: '100000',
    CONNECTIONS_PER_IP_PER_MINUTE: '10000000',
    NODE_ENV: 'production',
  };
  const nodes: NodeProcess[] = [];
  try {
    for (let i = 0; i < nodeCount; i++) nodes.push(await startNode(env)); // the first runs the migrations
    const token = (sub: string, roles: string[]) =>
      jwt.sign({ sub, roles, attrs: { department: 'eng' } }, secret, { expiresIn: 3600 });
    const admin = token('admin', ['admin']);
    const api = async (node: NodeProcess, method: string, path: string, body: unknown) => {
      const r = await fetch(node.http + path, {
        method,
        headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status}`);
      return r.json();
    };
    const project = await api(nodes[0], 'POST', '/api/projects', {
      name: 'bench',
      department: 'eng',
    });
    const task = await api(nodes[0], 'POST', '/api/tasks', {
      projectId: project.id,
      title: 'x',
      department: 'eng',
    });

    const latencies: number[] = [];
    const seen: Set<number>[] = [];
    let deliveries = 0;
    let lastAt = 0;
    const sockets: WebSocket[] = [];
    await Promise.all(
      Array.from({ length: CLIENTS }, async (_, i) => {
        const node = nodes[i % nodes.length];
        const ws = new WebSocket(`${node.ws}?access_token=${token(`user-${i}`, ['manager'])}`);
        sockets.push(ws);
        await new Promise<void>((resolve, reject) => {
          ws.once('error', reject);
          ws.on('message', (raw: Buffer) => {
            const text = raw.toString();
            if (text.startsWith('{"type":"subscription_created"')) return resolve();
            if (!text.startsWith('{"type":"data_change"')) return;
            const at = text.indexOf('bt=');
            if (at === -1) return;
            const sent = Number(text.slice(at + 3, text.indexOf('|', at)));
            latencies.push(Date.now() - sent);
            if (process.env.CLUSTER_BENCH_DEBUG) {
              const k = Number(text.slice(text.indexOf('|', at) + 1, text.indexOf('"', at)));
              (seen[i] ??= new Set()).add(k);
            }
            deliveries++;
            lastAt = Date.now();
          });
          ws.once('open', () =>
            ws.send(
              JSON.stringify({
                type: 'subscribe',
                id: '1',
                data: { query: { collection: 'tasks', documentId: task.id } },
              }),
            ),
          );
        });
      }),
    );
    const failures: string[] = [];
    const start = Date.now();
    for (let k = 0; k < WRITES; k++) {
      await new Promise((r) => setTimeout(r, start + k * INTERVAL_MS - Date.now()));
      api(nodes[k % nodes.length], 'PATCH', `/api/tasks/${task.id}`, {
        title: `bt=${Date.now()}|${k}`,
      }).catch((e: Error) => failures.push(e.message));
    }
    const expected = WRITES * CLIENTS;
    const deadline = Date.now() + 30_000;
    while (deliveries < expected && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    sockets.forEach((s) => s.terminate());
    if (process.env.CLUSTER_BENCH_DEBUG) {
      for (let i = 0; i < Math.min(CLIENTS, 4); i++) {
        const missing = Array.from({ length: WRITES }, (_, k) => k).filter((k) => !seen[i]?.has(k));
        console.log(
          `client ${i} on node ${i % nodes.length}: missing writes ${missing.join(',')} (write k goes through node k % ${nodes.length})`,
        );
      }
    }
    if (failures.length)
      console.log(`${failures.length} writes failed: ${[...new Set(failures)].join('; ')}`);
    latencies.sort((a, b) => a - b);
    return {
      nodes: nodeCount,
      deliveries,
      expected,
      perSecond: (deliveries * 1000) / Math.max(1, lastAt - start),
      p50: pct(latencies, 0.5),
      p99: pct(latencies, 0.99),
      max: latencies[latencies.length - 1],
    };
  } finally {
    if (process.env.CLUSTER_BENCH_DEBUG)
      for (const node of nodes) console.log(node.output().slice(-3000));
    for (const node of nodes) await node.stop();
    await drop();
  }
}

async function main(): Promise<void> {
  const results: Result[] = [];
  for (const n of [1, 2]) {
    const r = await run(n);
    results.push(r);
    console.log(
      `${n} node(s): ${r.deliveries}/${r.expected} delivered, ${r.perSecond.toFixed(0)}/s, p50 ${r.p50} ms, p99 ${r.p99} ms`,
    );
  }
  console.log(
    `\ncluster: ${CLIENTS} WebSocket subscribers spread over the nodes, ${WRITES} writes ${INTERVAL_MS} ms apart through all nodes (PostgreSQL + Redis)`,
  );
  console.log('| nodes | delivered | deliveries/s | p50 ms | p99 ms | max ms |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of results) {
    console.log(
      `| ${r.nodes} | ${r.deliveries}/${r.expected} | ${r.perSecond.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.max} |`,
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
