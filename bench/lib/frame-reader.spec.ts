import type { AddressInfo, Socket } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import {
  FrameReader,
  loadgenReader,
  loadgenTimes,
  readDirectly,
  sharedBufferConnect,
} from './frame-reader';

/** A frame as a server writes it (unmasked unless `mask`). */
function frame(opcode: number, payload: Buffer, fin = true, mask = false): Buffer {
  const len = payload.length;
  const first = (fin ? 0x80 : 0) | opcode;
  const m = mask ? 0x80 : 0;
  let head: Buffer;
  if (len < 126) head = Buffer.from([first, m | len]);
  else if (len < 0x10000) head = Buffer.from([first, m | 126, len >> 8, len & 0xff]);
  else {
    head = Buffer.alloc(10);
    head[0] = first;
    head[1] = m | 127;
    head.writeUInt32BE(Math.floor(len / 0x1_0000_0000), 2);
    head.writeUInt32BE(len % 0x1_0000_0000, 6);
  }
  return Buffer.concat([head, mask ? Buffer.alloc(4) : Buffer.alloc(0), payload]);
}

function reader() {
  const frames: string[] = [];
  const pongs: string[] = [];
  const handedBack: Buffer[] = [];
  const r = new FrameReader(
    (p) => frames.push(p.toString('latin1')),
    (p) => pongs.push(p.toString('latin1')),
    (rest) => handedBack.push(Buffer.from(rest)),
  );
  return { r, frames, pongs, handedBack };
}

describe("the load generator's reader and clock settings", () => {
  const saved = {
    reader: process.env.BENCH_LOADGEN_READER,
    times: process.env.BENCH_LOADGEN_TIMES,
  };
  afterEach(() => {
    for (const [key, value] of [
      ['BENCH_LOADGEN_READER', saved.reader],
      ['BENCH_LOADGEN_TIMES', saved.times],
    ] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  });

  it('defaults to the native reader and kernel times, and takes the other values', () => {
    delete process.env.BENCH_LOADGEN_READER;
    delete process.env.BENCH_LOADGEN_TIMES;
    expect([loadgenReader(), loadgenTimes()]).toEqual(['native', 'kernel']);
    process.env.BENCH_LOADGEN_READER = 'js';
    process.env.BENCH_LOADGEN_TIMES = 'read';
    expect([loadgenReader(), loadgenTimes()]).toEqual(['js', 'read']);
  });

  it('refuses anything else, naming the variable', () => {
    process.env.BENCH_LOADGEN_READER = 'C';
    expect(() => loadgenReader()).toThrow(/BENCH_LOADGEN_READER must be native, js or ws, not "C"/);
    process.env.BENCH_LOADGEN_TIMES = 'kernal';
    expect(() => loadgenTimes()).toThrow(
      /BENCH_LOADGEN_TIMES must be kernel or read, not "kernal"/,
    );
  });
});

describe('FrameReader (the load generator reading frames off a socket)', () => {
  const big = 'b'.repeat(70_000);
  const mid = 'm'.repeat(300);
  const stream = Buffer.concat([
    frame(1, Buffer.from('{"a":1}')),
    frame(2, Buffer.from(mid)),
    frame(9, Buffer.from('ping!')),
    frame(1, Buffer.from(big)),
    frame(10, Buffer.from('unsolicited pong')),
    frame(1, Buffer.from('frag-'), false),
    frame(9, Buffer.from('ping between fragments')),
    frame(0, Buffer.from('ment'), false),
    frame(0, Buffer.from('ed'), true),
    frame(1, Buffer.alloc(0)),
  ]);
  const expected = ['{"a":1}', mid, big, 'frag-mented', ''];

  it('reads every frame whole, wherever the chunks are cut', () => {
    for (const cut of [stream.length, 1, 2, 3, 7, 126, 1000, 65_537]) {
      const { r, frames, pongs, handedBack } = reader();
      for (let at = 0; at < stream.length; at += cut) r.push(stream.subarray(at, at + cut));
      expect(frames).toEqual(expected);
      expect(pongs).toEqual(['ping!', 'ping between fragments']);
      expect(handedBack).toEqual([]);
    }
  });

  it('hands a close frame, and every byte after it, back unread', () => {
    const close = frame(8, Buffer.from([0x0f, 0xa1]));
    const after = frame(1, Buffer.from('after the close'));
    const { r, frames, handedBack } = reader();
    r.push(Buffer.concat([frame(1, Buffer.from('before')), close.subarray(0, 1)]));
    r.push(Buffer.concat([close.subarray(1), after]));
    r.push(frame(1, Buffer.from('later')));
    expect(frames).toEqual(['before']);
    expect(handedBack).toEqual([Buffer.concat([close, after])]);
  });

  it('hands a close in the middle of a fragmented message back, the fragments unread', () => {
    const close = frame(8, Buffer.alloc(0));
    const { r, frames, handedBack } = reader();
    r.push(Buffer.concat([frame(1, Buffer.from('half'), false), close]));
    expect(frames).toEqual([]);
    expect(handedBack).toEqual([close]);
  });

  it('hands a frame that breaks the protocol back, for ws to fail the connection', () => {
    const cases: [string, Buffer, Buffer][] = [
      ['RSV1 set', Buffer.alloc(0), Buffer.from([0xc1, 0x01, 0x61])],
      ['reserved opcode 3', Buffer.alloc(0), frame(3, Buffer.from('x'))],
      ['a continuation with nothing to continue', Buffer.alloc(0), frame(0, Buffer.from('x'))],
      [
        'a data frame inside a fragmented message',
        frame(1, Buffer.from('a'), false),
        frame(1, Buffer.from('b')),
      ],
      [
        'a length over 100 MiB',
        Buffer.alloc(0),
        Buffer.from([0x81, 127, 0, 0, 0, 0, 0x10, 0, 0, 0]),
      ],
    ];
    for (const [, before, bad] of cases) {
      const { r, frames, handedBack } = reader();
      r.push(Buffer.concat([frame(1, Buffer.from('ok')), before, bad]));
      expect(frames).toEqual(['ok']);
      expect(handedBack).toEqual([bad]);
    }
  });

  it('hands a masked frame back (a server never masks)', () => {
    const masked = frame(1, Buffer.from('masked'), true, true);
    const { r, frames, handedBack } = reader();
    r.push(Buffer.concat([frame(1, Buffer.from('ok')), masked]));
    expect(frames).toEqual(['ok']);
    expect(handedBack).toEqual([masked]);
  });
});

describe.each([
  ['its own socket', {}],
  ['a socket reading into the shared buffer', { createConnection: sharedBufferConnect }],
])('readDirectly (a real ws client and server), the client on %s', (_, connectOptions) => {
  let server: WebSocketServer;
  let url: string;

  beforeEach(async () => {
    server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterEach(async () => {
    for (const client of server.clients) client.terminate();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('reads what the server sends, answers its ping, and gives its close back to ws', async () => {
    const peer = new Promise<WebSocket>((resolve) => server.once('connection', resolve));
    const client = new WebSocket(url, { perMessageDeflate: false, ...connectOptions });
    await new Promise<void>((resolve, reject) => {
      client.once('open', () => resolve());
      client.once('error', reject);
    });
    const frames: string[] = [];
    const viaWs: string[] = [];
    client.on('message', (data) => viaWs.push(String(data)));
    const s = await peer;
    // before the reader takes over, frames reach ws (the handshake's path)
    const early = new Promise((resolve) => client.once('message', resolve));
    s.send('early');
    await early;
    expect(readDirectly(client, (p) => frames.push(p.toString()))).toBe(true);

    const big = 'x'.repeat(70_000);
    const pong = new Promise<string>((resolve) => s.once('pong', (d) => resolve(d.toString())));
    s.send('one');
    s.send('y'.repeat(300));
    s.send(Buffer.from(big));
    s.send('frag', { fin: false });
    s.send('ment', { fin: true });
    s.ping('are you there');
    expect(await pong).toBe('are you there');

    const closed = new Promise<[number, string]>((resolve) =>
      client.once('close', (code, reason) => resolve([code, reason.toString()])),
    );
    s.close(4001, 'bye');
    expect(await closed).toEqual([4001, 'bye']);
    expect(frames).toEqual(['one', 'y'.repeat(300), big, 'fragment']);
    expect(viaWs).toEqual(['early']);
  });
});

describe('readDirectly on a socket reading into the shared buffer', () => {
  it("reads the bytes already in the socket's stream first, then the socket's", async () => {
    const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    try {
      const peer = new Promise<WebSocket>((resolve) => server.once('connection', resolve));
      const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`, {
        perMessageDeflate: false,
        createConnection: sharedBufferConnect,
      });
      await new Promise<void>((resolve, reject) => {
        client.once('open', () => resolve());
        client.once('error', reject);
      });
      const s = await peer;
      // as ws leaves bytes that came with the upgrade response: back in the socket's stream,
      // here a whole frame and the first bytes of the next
      const second = frame(1, Buffer.from('second, cut in two'));
      const socket = (client as unknown as { _socket: Socket })._socket;
      client.pause();
      socket.unshift(Buffer.concat([frame(1, Buffer.from('first')), second.subarray(0, 5)]));
      const viaWs: string[] = [];
      client.on('message', (data) => viaWs.push(String(data)));
      const frames: string[] = [];
      const third = new Promise<void>((resolve) =>
        expect(
          readDirectly(client, (p) => {
            frames.push(p.toString());
            if (frames.length === 3) resolve();
          }),
        ).toBe(true),
      );
      client.resume();
      // the rest of the cut frame, as a server would go on writing it
      (s as unknown as { _socket: Socket })._socket.write(second.subarray(5));
      s.send('third');
      await third;
      expect(frames).toEqual(['first', 'second, cut in two', 'third']);
      expect(viaWs).toEqual([]);
      client.terminate();
    } finally {
      for (const c of server.clients) c.terminate();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
