import Fastify, { FastifyInstance } from 'fastify';
import { Readable } from 'node:stream';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { expressLikeJsonBodies } from './json-body.fastify';

const LIMIT = 1024;

/** A Fastify server with the body reader and a route that shows what its handler got. */
async function server(): Promise<FastifyInstance> {
  const app = Fastify();
  expressLikeJsonBodies(app, LIMIT);
  app.post('/echo', async (req) => ({
    kind: req.body === undefined ? 'none' : typeof req.body,
    body: req.body ?? null,
  }));
  await app.ready();
  return app;
}

describe('expressLikeJsonBodies (Fastify bodies as body-parser json() reads them)', () => {
  let app: FastifyInstance;
  beforeAll(async () => (app = await server()));
  afterAll(() => app.close());

  const post = (payload: string | Buffer, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/echo', payload, headers });
  const json = { 'content-type': 'application/json' };

  it('parses an object or an array, and reads an empty JSON body as {}', async () => {
    expect((await post('{"a":1}', json)).json()).toEqual({ kind: 'object', body: { a: 1 } });
    expect((await post(' [1,2]', json)).json()).toEqual({ kind: 'object', body: [1, 2] });
    expect((await post('', json)).json()).toEqual({ kind: 'object', body: {} });
  });

  it('answers malformed JSON and bare scalars 400', async () => {
    for (const text of ['{"a":', '"s"', '42', 'null', 'true']) {
      const r = await post(text, json);
      expect([text, r.statusCode, r.json().message]).toEqual([text, 400, 'malformed JSON body']);
    }
  });

  it('drops a byte order mark and decodes the charset the Content-Type names', async () => {
    expect((await post('\ufeff{"a":"b"}', json)).json().body).toEqual({ a: 'b' });
    const utf16 = Buffer.from('{"a":"é"}', 'utf16le');
    const r = await post(utf16, { 'content-type': 'application/json; charset=utf-16le' });
    expect(r.json().body).toEqual({ a: 'é' });
    // malformed UTF-8 becomes U+FFFD, as iconv-lite (body-parser, on Express) decodes it
    const malformed = Buffer.concat([
      Buffer.from('{"a":"'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"}'),
    ]);
    expect((await post(malformed, json)).json().body).toEqual({ a: '\ufffd(' });
    for (const charset of ['latin1', 'utf-99', 'utf8']) {
      const refused = await post('{}', { 'content-type': `application/json; charset=${charset}` });
      expect([charset, refused.statusCode]).toEqual([charset, 415]);
    }
  });

  it('inflates gzip and br bodies, and refuses other encodings 415', async () => {
    const gz = await post(gzipSync('{"z":1}'), { ...json, 'content-encoding': 'gzip' });
    expect(gz.json().body).toEqual({ z: 1 });
    const br = await post(brotliCompressSync('{"b":2}'), { ...json, 'content-encoding': 'br' });
    expect(br.json().body).toEqual({ b: 2 });
    const odd = await post('{}', { ...json, 'content-encoding': 'compress' });
    expect(odd.statusCode).toBe(415);
  });

  it('answers 413 past the limit: declared, streamed, or once inflated', async () => {
    const big = `{"a":"${'x'.repeat(LIMIT)}"}`;
    expect((await post(big, json)).statusCode).toBe(413);
    // no Content-Length: counted as it comes
    const streamed = await app.inject({
      method: 'POST',
      url: '/echo',
      payload: Readable.from([Buffer.from(big.slice(0, 600)), Buffer.from(big.slice(600))]),
      headers: json,
    });
    expect(streamed.statusCode).toBe(413);
    const bomb = gzipSync(`{"a":"${'x'.repeat(LIMIT * 50)}"}`);
    expect(bomb.length).toBeLessThan(LIMIT);
    expect((await post(bomb, { ...json, 'content-encoding': 'gzip' })).statusCode).toBe(413);
  });

  it('does not read other bodies at all, whatever their size or Content-Type', async () => {
    const huge = 'x'.repeat(LIMIT * 20);
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'json', '']) {
      const r = await post(huge, type ? { 'content-type': type } : {});
      expect([type, r.statusCode, r.json().kind]).toEqual([type, 200, 'none']);
    }
  });
});
