/**
 * Baseline: a hand-rolled `ws` server, the least a real-time server can do. It checks the
 * HS256 token of each connection, answers the PROTOCOL.md handshake
 * (connection_established, subscribe → subscription_created) and broadcasts each published
 * message, serialized once, to every subscribed socket. No per-subscriber filtering,
 * authorization or serialization.
 *
 * Run as a program (by run.ts, from the transpiled bench directory): `PORT=… JWT_SECRET=…
 * node --expose-gc bare-ws.js`. Imported, it is the Target adapter.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import { memoryReport, startNodeProgram, type Target } from '../lib/target';

export const bareWsTarget: Target = {
  name: 'ws',
  label: 'bare ws',
  check: async () => null,
  start(ctx) {
    const secret = randomBytes(24).toString('hex');
    return startNodeProgram(ctx, {
      name: 'bare-ws',
      script: 'targets/bare-ws.js',
      env: { JWT_SECRET: secret },
      client: (port) => ({
        kind: 'protocol',
        url: `ws://127.0.0.1:${port}/realtime/ws`,
        jwt: { secret, claims: { roles: ['manager'], attrs: { department: 'eng' } } },
        subscribe: { type: 'subscribe', id: '1', data: { query: { collection: 'tasks' } } },
      }),
    });
  },
};

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function main(): Promise<void> {
  const { WebSocketServer } = await import('ws');
  const jwt = await import('jsonwebtoken');
  const secret = process.env.JWT_SECRET ?? '';
  const subscribers = new Set<WebSocket>();
  let connections = 0;

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'POST' && req.url === '/publish') {
      void readBody(req).then((frame) => {
        for (const ws of subscribers) ws.send(frame, { binary: false });
        res.writeHead(204).end();
      });
    } else if (req.method === 'GET' && req.url?.startsWith('/memory')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(memoryReport(req.url));
    } else {
      res.writeHead(404).end();
    }
  });

  const wss = new WebSocketServer({
    server,
    path: '/realtime/ws',
    perMessageDeflate: false,
    clientTracking: false,
  });
  wss.on('connection', (ws, req) => {
    const token = new URL(req.url ?? '/', 'http://localhost').searchParams.get('access_token');
    let userId: string;
    try {
      const claims = jwt.verify(token ?? '', secret, { algorithms: ['HS256'] });
      userId = typeof claims === 'object' ? String(claims.sub) : '';
    } catch {
      ws.close(1008, 'authentication failed');
      return;
    }
    const connectionId = `c${++connections}`;
    ws.send(
      JSON.stringify({
        type: 'connection_established',
        data: {
          connectionId,
          userId,
          serverTime: new Date().toISOString(),
          heartbeatIntervalMs: 30_000,
          protocolVersion: 1,
        },
      }),
    );
    ws.on('message', (data) => {
      let msg: { type?: string; id?: string; data?: { query?: unknown } };
      try {
        msg = JSON.parse(String(data)) as typeof msg;
      } catch {
        ws.send(
          JSON.stringify({ type: 'error', data: { code: 'invalid_message', message: 'not JSON' } }),
        );
        return;
      }
      if (msg.type === 'subscribe') {
        subscribers.add(ws);
        ws.send(
          JSON.stringify({
            type: 'subscription_created',
            id: msg.id,
            data: { subscriptionId: `s_${connectionId}`, query: msg.data?.query },
          }),
        );
      }
    });
    ws.on('close', () => subscribers.delete(ws));
  });

  // Longer than any pause of the orchestrator's keep-alive publisher between changes.
  server.keepAliveTimeout = 120_000;
  server.listen(Number(process.env.PORT), '127.0.0.1');
  process.on('SIGTERM', () => process.exit(0));
}

if (require.main === module) void main();
