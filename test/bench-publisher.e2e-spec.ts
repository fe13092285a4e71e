import { connect, createServer, type Server, type Socket } from 'node:net';
import { patchTitle } from '../bench/lib/process';
import { seedTask, startTestApp, type TestApp, USERS } from './utils/app';

/**
 * A proxy between the bench's publisher and the app that fails `PATCH`es on purpose: each
 * request that starts with `PATCH` takes the next mode (then `forward`), other requests
 * pass. `lose-answer` passes the request to the app, then resets the publisher's
 * connection when the answer comes (the change committed, the publisher never hears of
 * it); `reset` resets the connection at the request, before anything reaches the app.
 */
type Mode = 'forward' | 'lose-answer' | 'reset';

async function proxy(
  port: number,
  patchModes: Mode[],
): Promise<{ base: string; patches: () => number; close: () => Promise<void> }> {
  const open = new Set<Socket>();
  let patches = 0;
  const srv: Server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    let loseAnswer = false;
    open.add(client).add(upstream);
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
    client.on('data', (chunk) => {
      const mode = chunk.toString('latin1', 0, 6) === 'PATCH ' ? patchModes[patches++] : undefined;
      if (mode === 'reset') return void client.resetAndDestroy();
      if (mode === 'lose-answer') loseAnswer = true;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (loseAnswer) return void client.resetAndDestroy();
      client.write(chunk);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    base: `http://127.0.0.1:${(srv.address() as { port: number }).port}`,
    /** how many PATCH requests the publisher sent through it */
    patches: () => patches,
    close: () =>
      new Promise((resolve) => {
        srv.close(() => resolve());
        for (const socket of open) socket.destroy();
      }),
  };
}

describe("the bench's publisher (ours' PATCH, bench/lib/process.ts patchTitle)", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp('sqlite');
  });
  afterAll(async () => {
    await t?.close();
  });

  const headers = () => ({ authorization: `Bearer ${t.token(USERS.alice)}` });
  const read = async (id: string) => (await t.api(USERS.alice, 'GET', `/api/tasks/${id}`)).body;

  it.each([
    // the change committed and its answer was lost: looked up, not sent again
    ['a change whose answer is lost after it committed is not sent again', 'lose-answer', 1],
    // the change never reached the app: looked up, sent again once
    ['a change whose connection failed before it reached the app is sent again, once', 'reset', 2],
  ] as const)('%s: one change, its version known', async (_name, mode, patchesSent) => {
    const task = await seedTask(t);
    const via = await proxy(t.port, [mode]);
    try {
      const version = await patchTitle(
        `${via.base}/api/tasks/${task.id}`,
        `after ${mode}`,
        task.version,
        headers(),
      );
      const now = await read(task.id);
      expect(now.title).toBe(`after ${mode}`);
      expect(version).toBe(now.version);
      expect(now.version).toBe(task.version + 1);
      expect(via.patches()).toBe(patchesSent);
    } finally {
      await via.close();
    }
  });

  it('a stale version is refused with the 409 in the error, a bad one with the 400, and nothing changes', async () => {
    const task = await seedTask(t);
    const url = `${t.http}/api/tasks/${task.id}`;
    const moved = await patchTitle(url, 'moved on', task.version, headers());
    await expect(patchTitle(url, 'stale', task.version, headers())).rejects.toThrow(
      /^PATCH: HTTP 409/,
    );
    await expect(patchTitle(url, 'bad', 0, headers())).rejects.toThrow(
      /^PATCH: HTTP 400 .*validation_failed/,
    );
    const now = await read(task.id);
    expect(now.title).toBe('moved on');
    expect(now.version).toBe(moved);
  });

  it('a connection that fails on every try is an error naming both failures, and nothing changes', async () => {
    const task = await seedTask(t);
    // the PATCH, its resend after the read, and http()'s own retry of that resend on a
    // new connection (the resend went on the read's pooled connection) are all reset
    const via = await proxy(t.port, ['reset', 'reset', 'reset']);
    try {
      await expect(
        patchTitle(`${via.base}/api/tasks/${task.id}`, 'never', task.version, headers()),
      ).rejects.toThrow(/^PATCH: .+, then .+/);
      expect(via.patches()).toBe(3);
    } finally {
      await via.close();
    }
    const now = await read(task.id);
    expect(now.title).toBe(task.title);
    expect(now.version).toBe(task.version);
  });
});
