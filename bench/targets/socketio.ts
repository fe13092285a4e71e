/**
 * Baseline: Socket.IO 4, websocket transport only. The handshake checks the HS256 token
 * (`auth.token`), `subscribe` (with an ack) joins the room `tasks`, and each published
 * message is emitted to the room as one pre-serialized string (Socket.IO encodes a room
 * broadcast once for all its sockets).
 *
 * Run as a program (by run.ts, from the transpiled bench directory): `PORT=… JWT_SECRET=…
 * node --expose-gc socketio.js`. Imported, it is the Target adapter.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { memoryReport, startNodeProgram, type Target } from '../lib/target';

export const socketIoTarget: Target = {
  name: 'socketio',
  label: 'Socket.IO 4',
  check: async () => null,
  start(ctx) {
    const secret = randomBytes(24).toString('hex');
    return startNodeProgram(ctx, {
      name: 'socketio',
      script: 'targets/socketio.js',
      env: { JWT_SECRET: secret },
      client: (port) => ({
        kind: 'socketio',
        url: `http://127.0.0.1:${port}`,
        jwt: { secret, claims: { roles: ['manager'], attrs: { department: 'eng' } } },
        subscribe: { query: { collection: 'tasks' } },
      }),
    });
  },
};

async function main(): Promise<void> {
  const { Server } = await import('socket.io');
  const jwt = await import('jsonwebtoken');
  const secret = process.env.JWT_SECRET ?? '';

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'POST' && req.url === '/publish') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        io.to('tasks').emit('data_change', Buffer.concat(chunks).toString('utf8'));
        res.writeHead(204).end();
      });
    } else if (req.method === 'GET' && req.url?.startsWith('/memory')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(memoryReport(req.url));
    } else {
      res.writeHead(404).end();
    }
  });

  const io = new Server(server, {
    transports: ['websocket'],
    serveClient: false,
    perMessageDeflate: false,
    httpCompression: false,
  });
  io.use((socket, next) => {
    try {
      const token = (socket.handshake.auth as { token?: string }).token ?? '';
      const claims = jwt.verify(token, secret, { algorithms: ['HS256'] });
      socket.data.userId = typeof claims === 'object' ? claims.sub : undefined;
      next();
    } catch {
      next(new Error('authentication failed'));
    }
  });
  io.on('connection', (socket) => {
    socket.on('subscribe', (msg: { query?: unknown }, ack?: (reply: unknown) => void) => {
      void socket.join('tasks');
      ack?.({ subscriptionId: `s_${socket.id}`, query: msg?.query });
    });
  });

  // Longer than any pause of the orchestrator's keep-alive publisher between changes.
  server.keepAliveTimeout = 120_000;
  server.listen(Number(process.env.PORT), '127.0.0.1');
  process.on('SIGTERM', () => process.exit(0));
}

if (require.main === module) void main();
