import type { FastifyInstance } from 'fastify';
import { decode as decodeText, encodingExists } from 'iconv-lite';
import type { Readable } from 'node:stream';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';

/** An error as body-parser makes it, so that HttpErrorFilter answers both adapters alike. */
function bodyError(status: number, type: string, message: string): Error {
  return Object.assign(new Error(message), { status, statusCode: status, type });
}

/** Past the limit, as sent or once inflated. */
const tooLarge = (): Error => bodyError(413, 'entity.too.large', 'request entity too large');

/** A media type as RFC 9110 writes it (`type/subtype`, parameters after a `;`). */
const MEDIA_TYPE = /^[!#$%&'*+.^_`|~0-9a-z-]+\/[!#$%&'*+.^_`|~0-9a-z-]+\s*(;.*)?$/i;

/** `application/json` (any parameters), as body-parser's `json()` matches it. */
function isJson(contentType: string | undefined): boolean {
  if (!contentType) return false;
  const semi = contentType.indexOf(';');
  const type = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  return type === 'application/json';
}

/** The `charset` parameter of a Content-Type, lower case, or undefined. */
function charsetOf(contentType: string): string | undefined {
  const m = /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(contentType);
  return m?.[1].toLowerCase();
}

const ENCODINGS = new Set(['identity', 'gzip', 'deflate', 'br']);

/**
 * The body as sent before its `Content-Encoding` (gzip, deflate, br, as body-parser
 * inflates them), at most `limit` bytes of it.
 */
function inflate(encoding: string, body: Buffer, limit: number): Buffer {
  const options = { maxOutputLength: limit };
  try {
    if (encoding === 'gzip') return gunzipSync(body, options);
    if (encoding === 'deflate') return inflateSync(body, options);
    if (encoding === 'br') return brotliDecompressSync(body, options);
    return body;
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw tooLarge();
    }
    throw bodyError(400, 'encoding.failed', `the ${encoding} body could not be decoded`);
  }
}

/** UTF-8, the charset of nearly every JSON body: decoded by Node, not through iconv-lite. */
const isUtf8 = (charset: string): boolean => charset === 'utf-8';

/**
 * A body's text in its charset, without a byte order mark (as body-parser's iconv-lite
 * decoding drops one). UTF-8 as Node decodes it, as iconv-lite's own UTF-8 decoder does
 * (malformed sequences become U+FFFD alike), at a tenth of its cost per body.
 */
function textOf(raw: Buffer, charset: string): string {
  if (!isUtf8(charset)) return decodeText(raw, charset);
  const text = raw.toString('utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Parses a JSON body's text as body-parser's strict `json()` does. */
function parseJson(text: string): unknown {
  if (text.length === 0) return {};
  // strict: the first non-blank character opens an object or an array
  const first = text.trimStart()[0];
  if (first === '{' || first === '[') {
    try {
      return JSON.parse(text);
    } catch {
      // malformed: answered below, as a body that opens with anything else
    }
  }
  throw bodyError(400, 'entity.parse.failed', 'malformed JSON body');
}

/**
 * Reads a JSON body of at most `limit` bytes (as sent, and once inflated), then decodes
 * and parses it. A body past the limit is not read further (Node discards the rest).
 */
function readJson(
  payload: Readable,
  headers: Record<string, string | string[] | undefined>,
  charset: string,
  encoding: string,
  limit: number,
  done: (err: Error | null, body?: unknown) => void,
): void {
  const declared = Number(headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    done(tooLarge());
    return;
  }
  const chunks: Buffer[] = [];
  let received = 0;
  let finished = false;
  const finish = (err: Error | null, body?: unknown): void => {
    if (finished) return;
    finished = true;
    payload.removeListener('data', onData);
    done(err, body);
  };
  const onData = (chunk: Buffer): void => {
    received += chunk.length;
    if (received > limit) {
      finish(tooLarge());
      payload.resume(); // the rest is read and dropped
      return;
    }
    chunks.push(chunk);
  };
  payload.on('data', onData);
  payload.on('error', () => finish(bodyError(400, 'request.aborted', 'request aborted')));
  payload.on('end', () => {
    if (finished) return;
    let body: unknown;
    try {
      const raw = inflate(encoding, Buffer.concat(chunks, received), limit);
      body = parseJson(textOf(raw, charset));
    } catch (e) {
      finish(e as Error);
      return;
    }
    finish(null, body);
  });
}

/**
 * Request bodies on Fastify as the Express app reads them (`json({ limit })` from
 * body-parser), so that the API answers the same on both adapters:
 *
 * - `application/json` is read up to `limit` bytes (413 past it, also once inflated: a
 *   gzip, deflate or br `Content-Encoding` is decoded, another is 415), decoded in its
 *   charset (`utf-8` when none; one not beginning with `utf-`, or unknown, is 415; a byte
 *   order mark is dropped) and parsed: an empty body is `{}`; anything but an object or
 *   an array, or malformed JSON, is 400 `malformed JSON body`;
 * - any other body (a form, text, a Content-Type that is not a media type, none) is not
 *   read at all: the handler sees no body and answers as to a request without one, and
 *   Node discards the bytes, whatever their size. Fastify's defaults would parse text,
 *   answer 415 to other types, and count every body against its limit.
 *
 * Not the same: Fastify reads no body on GET and HEAD (body-parser would parse one).
 */
export function expressLikeJsonBodies(fastify: FastifyInstance, limit: number): void {
  fastify.removeAllContentTypeParsers();
  // Fastify answers 415 to a Content-Type it cannot parse before any parser runs; Express
  // ignores such a body
  fastify.addHook('onRequest', (req, _reply, next) => {
    const type = req.headers['content-type'];
    if (type !== undefined && !MEDIA_TYPE.test(type.trim())) delete req.headers['content-type'];
    next();
  });
  fastify.addContentTypeParser('*', (req, payload, done) => {
    const contentType = req.headers['content-type'];
    if (!isJson(contentType)) {
      done(null, undefined);
      return;
    }
    const charset = charsetOf(contentType as string) ?? 'utf-8';
    if (!isUtf8(charset) && (!charset.startsWith('utf-') || !encodingExists(charset))) {
      done(bodyError(415, 'charset.unsupported', `unsupported charset "${charset.toUpperCase()}"`));
      return;
    }
    const encoding = String(req.headers['content-encoding'] ?? 'identity').toLowerCase();
    if (!ENCODINGS.has(encoding)) {
      done(bodyError(415, 'encoding.unsupported', `unsupported content encoding "${encoding}"`));
      return;
    }
    readJson(payload, req.headers, charset, encoding, limit, done);
  });
}
