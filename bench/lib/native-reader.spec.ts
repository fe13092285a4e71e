import type { AddressInfo, Socket } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { marker } from './common';
import { sharedBufferConnect } from './frame-reader';
import { NativeReader, type NativeSink } from './native-reader';

// The addon starts once per process: every test reads through this one reader, its sink
// forwarding to the test's own record.
let seen: { records: number[][]; frames: number; bytes: number } = {
  records: [],
  frames: 0,
  bytes: 0,
};
const sink: NativeSink = {
  record: (client, sentUs, seq, recvUs) => seen.records.push([client, sentUs, seq, recvUs]),
  counts: (frames, bytes) => {
    seen.frames += frames;
    seen.bytes += bytes;
  },
};
// (kernel receive times, as the bench's default)
const opened = NativeReader.open(sink, true);
const reader = opened.reader;

/** A frame as a server writes it (unmasked). */
function frame(opcode: number, payload: Buffer, fin = true): Buffer {
  const len = payload.length;
  const first = (fin ? 0x80 : 0) | opcode;
  let head: Buffer;
  if (len < 126) head = Buffer.from([first, len]);
  else if (len < 0x10000) head = Buffer.from([first, 126, len >> 8, len & 0xff]);
  else {
    head = Buffer.alloc(10);
    head[0] = first;
    head[1] = 127;
    head.writeUInt32BE(Math.floor(len / 0x1_0000_0000), 2);
    head.writeUInt32BE(len % 0x1_0000_0000, 6);
  }
  return Buffer.concat([head, payload]);
}

describe("the bench's native frame reader", () => {
  it('is built (npm install builds it; CI must test the reader the bench uses)', () => {
    if (reader === null) {
      const message = `native/frame-reader did not load (${opened.why}); the load generator falls back to its JavaScript FrameReader`;
      if (process.env.REQUIRE_SERVICES === '1') throw new Error(message);
      console.warn(`\n\n*** ${message} ***\n`);
    }
    expect(opened.why).toMatch(reader ? /^loaded / : /./);
  });
});

(reader ? describe : describe.skip)('NativeReader on a real ws client and server', () => {
  let server: WebSocketServer;
  let client: WebSocket;
  let peer: WebSocket;
  const r = reader as NativeReader;

  beforeEach(async () => {
    seen = { records: [], frames: 0, bytes: 0 };
    server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    const accepted = new Promise<WebSocket>((resolve) => server.once('connection', resolve));
    client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`, {
      perMessageDeflate: false,
      createConnection: sharedBufferConnect,
    });
    await new Promise<void>((resolve, reject) => {
      client.once('open', () => resolve());
      client.once('error', reject);
    });
    peer = await accepted;
  });

  afterEach(async () => {
    r.detach(client);
    client.terminate();
    for (const c of server.clients) c.terminate();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** Resolves once `n` records have come. */
  function records(n: number): Promise<number[][]> {
    return new Promise((resolve) => {
      const poll = (): void => {
        if (seen.records.length >= n) resolve(seen.records);
        else setTimeout(poll, 5);
      };
      poll();
    });
  }

  const rawWrite = (bytes: Buffer): boolean =>
    (peer as unknown as { _socket: Socket })._socket.write(bytes);

  it('records every marker of every frame, answers pings, and gives a close back to ws', async () => {
    const viaWs: string[] = [];
    client.on('message', (data) => viaWs.push(String(data)));
    const early = new Promise((resolve) => client.once('message', resolve));
    peer.send('before the reader: through ws');
    await early;
    expect(r.attach(client, 7)).toBe(true);

    const pong = new Promise<string>((resolve) => peer.once('pong', (d) => resolve(d.toString())));
    peer.send(`{"title":"${marker(1, 1_000)}"}`);
    // two changes in one frame over 64 KiB (a 64-bit length), as a burst's frame carries
    const big = `{"a":"${marker(2, 2_000)}","pad":"${'x'.repeat(70_000)}","b":"${marker(3, 3_000)}"}`;
    peer.send(Buffer.from(big)); // (binary)
    peer.send('{"type":"heartbeat"}'); // no marker: a frame, no record
    peer.ping('are you there');
    expect(await pong).toBe('are you there');
    // a frame cut between two writes (and so, here, two reads)
    const cut = frame(1, Buffer.from(`{"title":"${marker(4, 4_000)}"}`));
    rawWrite(cut.subarray(0, 9));
    await new Promise((resolve) => setTimeout(resolve, 30));
    rawWrite(cut.subarray(9));
    const got = await records(4);
    expect(got.map(([client, sent, seq]) => [client, sent, seq])).toEqual([
      [7, 1_000, 1],
      [7, 2_000, 2],
      [7, 3_000, 3],
      [7, 4_000, 4],
    ]);
    // received times are on process.hrtime's clock
    const nowUs = Number(process.hrtime.bigint() / 1000n);
    for (const [, , , recv] of got) expect(nowUs - recv).toBeGreaterThanOrEqual(0);
    for (const [, , , recv] of got) expect(nowUs - recv).toBeLessThan(10_000_000);
    expect(seen.frames).toBe(4);

    const closed = new Promise<[number, string]>((resolve) =>
      client.once('close', (code, reason) => resolve([code, reason.toString()])),
    );
    peer.close(4001, 'bye');
    expect(await closed).toEqual([4001, 'bye']);
    expect(viaWs).toEqual(['before the reader: through ws']);
  });

  it('times a frame when the kernel received it, not when this busy process read it', async () => {
    expect(r.attach(client, 3)).toBe(true);
    // (Linux turns packet timestamps on a moment after the first socket asks, and off after
    // the last closes: a first frame, and its record, before the one measured)
    peer.send(`{"title":"${marker(8, 8_000)}"}`);
    await records(1);
    seen.records = [];
    r.readDelay(); // (from here on)
    const before = Number(process.hrtime.bigint() / 1000n);
    peer.send(`{"title":"${marker(9, before)}"}`); // (written to the socket at once)
    // the event loop held for 80 ms, as another task holding the load generator's CPU would
    while (Number(process.hrtime.bigint() / 1000n) - before < 80_000);
    const [[, , seq, recv]] = await records(1);
    const read = Number(process.hrtime.bigint() / 1000n);
    expect(seq).toBe(9);
    expect(read - before).toBeGreaterThanOrEqual(80_000);
    // the frame reached the socket within moments of the send, 80 ms before it was read
    expect(recv).toBeGreaterThanOrEqual(before - 1_000);
    expect(recv - before).toBeLessThan(40_000);
    const delay = r.readDelay();
    expect(delay.reads).toBeGreaterThanOrEqual(1);
    expect(delay.unstamped).toBe(0);
    expect(delay.maxUs).toBeGreaterThanOrEqual(40_000);
    expect(r.readDelay().reads).toBe(0); // (each call counts from the one before)
  });

  it('gives a fragmented message, and everything after it, back to ws', async () => {
    const viaWs: string[] = [];
    client.on('message', (data) => viaWs.push(String(data)));
    expect(r.attach(client, 1)).toBe(true);
    peer.send(`{"title":"${marker(10, 10)}"}`);
    await records(1);
    const later = new Promise((resolve) => {
      client.on('message', () => {
        if (viaWs.length === 2) resolve(undefined);
      });
    });
    peer.send('frag', { fin: false });
    peer.send('ment', { fin: true });
    peer.send(`{"title":"${marker(11, 11)}"}`);
    await later;
    expect(viaWs).toEqual(['fragment', `{"title":"${marker(11, 11)}"}`]);
    expect(seen.records.map(([, , seq]) => seq)).toEqual([10]);
  });

  it("reads the bytes already in the socket's stream first, then the socket's", async () => {
    const second = frame(1, Buffer.from(`{"title":"${marker(21, 21)}"}`));
    const socket = (client as unknown as { _socket: Socket })._socket;
    socket.pause();
    // as ws leaves bytes that came with the upgrade response: a whole frame and part of one
    socket.unshift(
      Buffer.concat([frame(1, Buffer.from(`{"t":"${marker(20, 20)}"}`)), second.subarray(0, 5)]),
    );
    const viaWs: string[] = [];
    client.on('message', (data) => viaWs.push(String(data)));
    expect(r.attach(client, 3)).toBe(true);
    // net restarts a paused socket's reads on resume(): the native reader's must go on alone
    socket.resume();
    socket.read(0);
    rawWrite(second.subarray(5));
    peer.send(`{"title":"${marker(22, 22)}"}`);
    const got = await records(3);
    expect(got.map(([c, , seq]) => [c, seq])).toEqual([
      [3, 20],
      [3, 21],
      [3, 22],
    ]);
    expect(viaWs).toEqual([]);
  });

  it('reads nothing of a detached client, and leaves its socket to its owner', async () => {
    expect(r.attach(client, 5)).toBe(true);
    peer.send(`{"title":"${marker(30, 30)}"}`);
    await records(1);
    r.detach(client);
    const viaWs = new Promise((resolve) => client.once('message', (data) => resolve(String(data))));
    peer.send(`{"title":"${marker(31, 31)}"}`);
    expect(await viaWs).toBe(`{"title":"${marker(31, 31)}"}`);
    expect(seen.records.map(([, , seq]) => seq)).toEqual([30]);
  });

  it('tells when the server ends the connection without a close frame', async () => {
    expect(r.attach(client, 6)).toBe(true);
    const closed = new Promise<number>((resolve) => client.once('close', (code) => resolve(code)));
    (peer as unknown as { _socket: Socket })._socket.destroy();
    expect(await closed).toBe(1006);
  });
});
