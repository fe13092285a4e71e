import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import {
  EARLY_FRAMES,
  flushFrameWrites,
  FrameSocket,
  nativeFrameWriterLoaded,
  nativeFrameWriterStatus,
  PING_FRAME,
  writeFrame,
  writeTextFrame,
  type EncodedJson,
} from './ws-frame';

/**
 * The complete WebSocket text frames (unmasked, as a server sends them) at the start of
 * `bytes`; a ping without payload reads `<ping>`.
 */
function parseFrames(bytes: Buffer): string[] {
  const out: string[] = [];
  let at = 0;
  while (at + 2 <= bytes.length) {
    if (bytes[at] === 0x89 && bytes[at + 1] === 0) {
      out.push('<ping>');
      at += 2;
      continue;
    }
    if (bytes[at] !== 0x81) throw new Error(`not a final text frame at byte ${at}: ${bytes[at]}`);
    let length = bytes[at + 1];
    let offset = at + 2;
    if (length === 126) {
      if (offset + 2 > bytes.length) break;
      length = bytes.readUInt16BE(offset);
      offset += 2;
    } else if (length === 127) {
      if (offset + 8 > bytes.length) break;
      length = bytes.readUInt32BE(offset) * 2 ** 32 + bytes.readUInt32BE(offset + 4);
      offset += 8;
    }
    if (offset + length > bytes.length) break;
    out.push(bytes.subarray(offset, offset + length).toString('utf8'));
    at = offset + length;
  }
  return out;
}

const PREFIX = Buffer.from('{"changes":[');
const SUFFIX = Buffer.from(']}');
const part = (text: string): EncodedJson => ({ json: JSON.stringify(text) });

/** A connected pair of real TCP sockets on loopback. */
async function socketPair(): Promise<{ server: Server; writer: Socket; reader: Socket }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const reader = connect(port, '127.0.0.1');
  await once(reader, 'connect');
  const [writer] = await accepted;
  return { server, writer, reader };
}

describe('the native frame writer', () => {
  it('is built (npm install builds it; CI must test the path it ships)', () => {
    if (!nativeFrameWriterLoaded) {
      const message = `native/frame-writer did not load (${nativeFrameWriterStatus}); the fan-out falls back to fs.writeSync`;
      if (process.env.REQUIRE_SERVICES === '1') throw new Error(message);
      console.warn(`\n\n*** ${message} ***\n`);
    }
    expect(typeof nativeFrameWriterLoaded).toBe('boolean');
  });
});

// Both write paths: the native batch (when built) and one fs.writeSync per frame.
describe.each(
  nativeFrameWriterLoaded
    ? [['native batch', true] as const, ['fs.writeSync', false] as const]
    : [['fs.writeSync', false] as const],
)('writeTextFrame on a real TCP socket (%s)', (_name, native) => {
  let server: Server;
  let writer: Socket;
  let reader: Socket;

  let target: FrameSocket;

  /** everything the reader got, once a test started reading */
  let received: Buffer[] | null;

  beforeEach(async () => {
    received = null;
    ({ server, writer, reader } = await socketPair());
    target = new FrameSocket(writer, native);
    expect(target.native).toBe(native);
  });

  /** As WsConnection does before writing to the socket itself (ws's frames, pings, close). */
  function ownWrite(bytes: Buffer): void {
    if (target.inBatch) flushFrameWrites();
    writer.write(bytes);
  }
  afterEach(async () => {
    writer.destroy();
    reader.destroy();
    server.close();
    await once(server, 'close');
  });

  async function readAll(expectedFrames: number): Promise<string[]> {
    if (received === null) {
      const chunks: Buffer[] = (received = []);
      reader.on('data', (c: Buffer) => chunks.push(c));
    }
    const chunks = received;
    reader.resume();
    for (let i = 0; i < 500; i++) {
      const frames = parseFrames(Buffer.concat(chunks));
      if (frames.length >= expectedFrames) return frames;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`fewer than ${expectedFrames} frames arrived`);
  }

  it('keeps every frame whole and in order when the peer stops reading (kernel buffer full)', async () => {
    reader.pause();
    const sent: string[] = [];
    // well past the loopback send + receive buffers, with sizes across every header form
    for (let i = 0; i < 3000; i++) {
      const size = i === 1234 ? 1_100_000 : i % 50 === 0 ? 70_000 : (i * 37) % 900;
      const text = `${i}:` + 'x'.repeat(size);
      writeTextFrame(target, PREFIX, [part(text)], SUFFIX, false);
      sent.push(`{"changes":[${JSON.stringify(text)}]}`);
      // the socket's own writes (ws's pings, close) interleave and must stay in order
      if (i % 500 === 0) {
        ownWrite(Buffer.from([0x81, 5, ...Buffer.from('"own"')]));
        sent.push('"own"');
      }
    }
    flushFrameWrites();
    expect(writer.writableLength).toBeGreaterThan(0); // the stream really took over
    const got = await readAll(sent.length);
    expect(got.length).toBe(sent.length);
    for (let i = 0; i < sent.length; i++) expect(got[i]).toBe(sent[i]);
  });

  it('lets frames announced with `more` leave together, in order, with the last one', async () => {
    writeTextFrame(target, PREFIX, [part('a')], SUFFIX, true);
    writeTextFrame(target, PREFIX, [part('b'), part('c')], SUFFIX, true);
    writeTextFrame(target, PREFIX, [part('d')], SUFFIX, false);
    writeTextFrame(target, PREFIX, [part('e')], SUFFIX, false);
    expect(await readAll(4)).toEqual([
      '{"changes":["a"]}',
      '{"changes":["b","c"]}',
      '{"changes":["d"]}',
      '{"changes":["e"]}',
    ]);
  });

  it('still sends frames staged by a dispatch that never announced its last one', async () => {
    writeTextFrame(target, PREFIX, [part('a')], SUFFIX, true);
    writeTextFrame(target, PREFIX, [part('b')], SUFFIX, true);
    expect(await readAll(2)).toEqual(['{"changes":["a"]}', '{"changes":["b"]}']);
  });

  it('flushStaged sends held frames before what the socket writes next; discardStaged drops them', async () => {
    writeTextFrame(target, PREFIX, [part('a')], SUFFIX, true);
    target.flushStaged();
    ownWrite(Buffer.from([0x81, 5, ...Buffer.from('"end"')])); // as ws's close frame would
    writeTextFrame(target, PREFIX, [part('dropped')], SUFFIX, true);
    target.discardStaged();
    expect(await readAll(2)).toEqual(['{"changes":["a"]}', '"end"']);
    await new Promise((r) => setTimeout(r, 50)); // past the end-of-tick sweep
    ownWrite(Buffer.from([0x81, 6, ...Buffer.from('"last"')]));
    expect(await readAll(3)).toEqual(['{"changes":["a"]}', '"end"', '"last"']);
  });

  it('writeFrame sends a ping after what is staged, batched or queued for its socket, never before', async () => {
    writeTextFrame(target, PREFIX, [part('staged')], SUFFIX, true);
    writeFrame(target, PING_FRAME);
    writeTextFrame(target, PREFIX, [part('batched')], SUFFIX, false);
    writeFrame(target, PING_FRAME);
    writeFrame(target, PING_FRAME);
    expect(await readAll(5)).toEqual([
      '{"changes":["staged"]}',
      '<ping>',
      '{"changes":["batched"]}',
      '<ping>',
      '<ping>',
    ]);
    // behind a full kernel buffer the pings queue on the stream, in their place
    reader.pause();
    const big = 'x'.repeat(200_000);
    const sent: string[] = [];
    for (let i = 0; i < 40; i++) {
      writeTextFrame(target, PREFIX, [part(`${i}${big}`)], SUFFIX, false);
      sent.push(`{"changes":[${JSON.stringify(`${i}${big}`)}]}`);
      if (i % 10 === 9) {
        writeFrame(target, PING_FRAME);
        sent.push('<ping>');
      }
    }
    flushFrameWrites();
    expect(writer.writableLength).toBeGreaterThan(0);
    const got = await readAll(5 + sent.length);
    expect(got.slice(5)).toEqual(sent);
    expect(PING_FRAME).toEqual(Buffer.from([0x89, 0x00])); // shared, never written into
  });

  it('does not throw when the peer is gone; the socket reports the error the usual way', async () => {
    const errored = once(writer, 'close');
    writer.on('error', () => undefined);
    reader.destroy();
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 5; i++) writeTextFrame(target, PREFIX, [part('gone')], SUFFIX, false);
    await errored;
    expect(writer.destroyed).toBe(true);
  });
});

(nativeFrameWriterLoaded ? describe : describe.skip)('the native batch across sockets', () => {
  const pairs: { server: Server; writer: Socket; reader: Socket }[] = [];
  afterEach(async () => {
    for (const { server, writer, reader } of pairs.splice(0)) {
      writer.destroy();
      reader.destroy();
      server.close();
      await once(server, 'close');
    }
  });

  async function framesOf(reader: Socket, expected: number): Promise<string[]> {
    const chunks: Buffer[] = [];
    reader.on('data', (c: Buffer) => chunks.push(c));
    for (let i = 0; i < 300; i++) {
      const frames = parseFrames(Buffer.concat(chunks));
      if (frames.length >= expected) return frames;
      await new Promise((r) => setTimeout(r, 10));
    }
    return parseFrames(Buffer.concat(chunks));
  }

  it('writes one change to many sockets in one batch, each with its own prefix, at the end of the tick', async () => {
    for (let i = 0; i < EARLY_FRAMES - 1; i++) pairs.push(await socketPair());
    const change = part('shared change');
    const targets = pairs.map(({ writer }) => new FrameSocket(writer));
    targets.forEach((target, i) =>
      writeTextFrame(target, Buffer.from(`{"sub":${i},"changes":[`), [change], SUFFIX, false),
    );
    // nothing has left yet: the batch leaves in one native call at the end of the tick
    expect(targets.every((t) => t.inBatch)).toBe(true);
    expect(change.tail?.toString()).toBe('"shared change"]}'); // encoded once, shared
    const got = await Promise.all(pairs.map(({ reader }) => framesOf(reader, 1)));
    expect(targets.some((t) => t.inBatch)).toBe(false);
    got.forEach((frames, i) =>
      expect(frames).toEqual([`{"sub":${i},"changes":["shared change"]}`]),
    );
  });

  it('shares one tail among frames of the same several changes; frames of other sets of them stay whole', async () => {
    for (let i = 0; i < 6; i++) pairs.push(await socketPair());
    const [a, b, c] = [part('a'), part('b'), part('c')];
    // as in a burst: every subscriber's frame carries the same changes, each in its own
    // array; then sets that start with the same change but differ, one after the other
    const sets = [[a, b, c], [a, b, c], [a, b, c], [a], [a, b], [b, c]];
    const targets = pairs.map(({ writer }) => new FrameSocket(writer));
    targets.forEach((target, i) =>
      writeTextFrame(target, Buffer.from(`{"sub":${i},"changes":[`), [...sets[i]], SUFFIX, false),
    );
    const got = await Promise.all(pairs.map(({ reader }) => framesOf(reader, 1)));
    const text = (set: EncodedJson[]) => set.map((p) => p.json).join(',');
    got.forEach((frames, i) =>
      expect(frames).toEqual([`{"sub":${i},"changes":[${text(sets[i])}]}`]),
    );
    // the last tail made with `a` first is kept on it, with the changes it carries
    expect(a.tail?.toString()).toBe('"a","b"]}');
    expect(b.tail?.toString()).toBe('"b","c"]}');
    // a frame of the same changes again reuses that tail rather than making another
    const kept = b.tail;
    writeTextFrame(targets[0], PREFIX, [b, c], SUFFIX, false);
    expect(b.tail).toBe(kept);
    expect(await framesOf(pairs[0].reader, 1)).toEqual([`{"changes":[${text([b, c])}]}`]);
  });

  it("sends a tick's first EARLY_FRAMES frames at once, then twice as many, the rest at the end of the tick, in every tick", async () => {
    // EARLY_FRAMES leave, then the next 2 × EARLY_FRAMES; the rest (fewer than the next
    // doubling, more than EARLY_FRAMES: a flush every EARLY_FRAMES would take some) wait
    const leaveEarly = 3 * EARLY_FRAMES;
    for (let i = 0; i < leaveEarly + EARLY_FRAMES + 8; i++) pairs.push(await socketPair());
    const targets = pairs.map(({ writer }) => new FrameSocket(writer));
    for (const round of ['one', 'two']) {
      const change = part(round);
      targets.forEach((target, i) =>
        writeTextFrame(target, Buffer.from(`{"sub":${i},"changes":[`), [change], SUFFIX, false),
      );
      // the first ones are with the kernel already; the others wait for the end of the tick
      expect(targets.map((t) => t.inBatch)).toEqual(targets.map((_, i) => i >= leaveEarly));
      expect(change.tail?.toString()).toBe(`"${round}"]}`); // encoded once, on both sides
      await new Promise((r) => setImmediate(r)); // the next tick: the batch has left
      expect(targets.some((t) => t.inBatch)).toBe(false);
    }
    const got = await Promise.all(pairs.map(({ reader }) => framesOf(reader, 2)));
    got.forEach((frames, i) =>
      expect(frames).toEqual([`{"sub":${i},"changes":["one"]}`, `{"sub":${i},"changes":["two"]}`]),
    );
  });

  it('sends a batched frame after bytes written to its socket without a flush first, never into them', async () => {
    const pair = await socketPair();
    pairs.push(pair);
    const target = new FrameSocket(pair.writer);
    writeTextFrame(target, PREFIX, [part('late')], SUFFIX, false);
    expect(target.inBatch).toBe(true);
    // what WsConnection never does (it flushes first), as ws's own writes could one day
    pair.writer.cork();
    pair.writer.write(Buffer.from([0x81, 7, ...Buffer.from('"first"')]));
    flushFrameWrites();
    pair.writer.uncork();
    expect(await framesOf(pair.reader, 2)).toEqual(['"first"', '{"changes":["late"]}']);
  });

  it('skips a socket destroyed after its frame joined the batch, and still writes the others', async () => {
    for (let i = 0; i < 3; i++) pairs.push(await socketPair());
    const targets = pairs.map(({ writer }) => new FrameSocket(writer));
    targets.forEach((target) => writeTextFrame(target, PREFIX, [part('x')], SUFFIX, false));
    pairs[1].writer.destroy(); // its descriptor is closed now, and its number free for reuse
    expect(() => flushFrameWrites()).not.toThrow();
    const [first, , third] = await Promise.all(pairs.map(({ reader }) => framesOf(reader, 1)));
    expect(first).toEqual(['{"changes":["x"]}']);
    expect(third).toEqual(['{"changes":["x"]}']);
  });
});
