import { createServer, type Socket } from 'node:net';
import { ephemeralRange, freePort, http } from './process';

describe('freePort', () => {
  it("reads the kernel's ephemeral range, or falls back to Linux's default", () => {
    expect(ephemeralRange('40000\t50000\n')).toEqual([40000, 50000]);
    expect(ephemeralRange('nonsense')).toEqual([32768, 60999]);
    expect(ephemeralRange(undefined)).toEqual([32768, 60999]);
    expect(ephemeralRange('80 70')).toEqual([32768, 60999]);
  });

  it('gives a port below the ephemeral range that a server can listen on, on every address', async () => {
    const [low] = ephemeralRange();
    const port = await freePort();
    expect(port).toBeGreaterThan(1024);
    expect(port).toBeLessThan(low);
    const srv = createServer();
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, '0.0.0.0', resolve);
    });
    await new Promise((resolve) => srv.close(resolve));
  });
});

describe('http', () => {
  /** A raw HTTP/1.1 server: `answer(k, n)` says whether to answer the n-th request of connection k. */
  async function rawServer(
    answer: (connection: number, request: number) => boolean,
    keepAliveHeader?: string,
  ): Promise<{ base: string; connections: () => number; close: () => Promise<void> }> {
    let connections = 0;
    const sockets = new Set<Socket>();
    const srv = createServer((socket) => {
      const k = ++connections;
      sockets.add(socket);
      let requests = 0;
      socket.on('data', (chunk) => {
        // each test request fits in one segment on loopback
        if (!chunk.toString('latin1').includes('\r\n\r\n')) return;
        if (!answer(k, ++requests)) return void socket.resetAndDestroy();
        socket.write(
          'HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n' +
            (keepAliveHeader ? `keep-alive: ${keepAliveHeader}\r\n` : '') +
            `\r\nc${k}`,
        );
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const { port } = srv.address() as { port: number };
    return {
      base: `http://127.0.0.1:${port}`,
      connections: () => connections,
      close: () =>
        new Promise((resolve) => {
          srv.close(() => resolve());
          for (const socket of sockets) socket.destroy();
        }),
    };
  }

  it('sends a request again on a new connection when its reused socket is reset, and only then', async () => {
    // the first connection answers its first request and resets at its second, as a server
    // does that closes an idle socket just as a request crosses its close
    const server = await rawServer((k, n) => !(k === 1 && n === 2));
    try {
      await expect(http('GET', `${server.base}/a`)).resolves.toEqual({ status: 200, body: 'c1' });
      await expect(http('GET', `${server.base}/b`)).resolves.toEqual({ status: 200, body: 'c2' });
      expect(server.connections()).toBe(2);
    } finally {
      await server.close();
    }
    // a reset of a first request (not a reused socket) is an error, not sent again
    const resetting = await rawServer(() => false);
    try {
      await expect(http('GET', `${resetting.base}/c`)).rejects.toThrow();
      expect(resetting.connections()).toBe(1);
    } finally {
      await resetting.close();
    }
  });

  it("closes an idle socket before the server's keep-alive hint runs out", async () => {
    // timeout=2: the agent keeps the socket idle for at most 1 s
    const server = await rawServer(() => true, 'timeout=2');
    try {
      await expect(http('GET', `${server.base}/a`)).resolves.toMatchObject({ body: 'c1' });
      await expect(http('GET', `${server.base}/b`)).resolves.toMatchObject({ body: 'c1' });
      await new Promise((resolve) => setTimeout(resolve, 1_300));
      await expect(http('GET', `${server.base}/c`)).resolves.toMatchObject({ body: 'c2' });
    } finally {
      await server.close();
    }
  });
});
