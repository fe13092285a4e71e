import type { FastifyInstance } from 'fastify';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';

/** An error as body-parser makes it, so that HttpErrorFilter answers both adapters alike. */
function bodyError(status: number, type: string, message: string): Error {
  return Object.assign(new Error(message), { status, statusCode: status, type });
}

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

/**
 * The body as sent before its `Content-Encoding` (gzip, deflate, br, as body-parser
 * inflates them), at most `limit` bytes of it.
 */
function decode(encoding: string, body: Buffer, limit: number): Buffer {
  const options = { maxOutputLength: limit };
  try {
    switch (encoding) {
      case 'identity':
        return body;
      case 'gzip':
        return gunzipSync(body, options);
      case 'deflate':
        return inflateSync(body, options);
      case 'br':
        return brotliDecompressSync(body, options);
    }
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw bodyError(413, 'entity.too.large', 'request entity too large');
    }
    throw bodyError(400, 'encoding.failed', `the ${encoding} body could not be decoded`);
  }
  throw bodyError(415, 'encoding.unsupported', `unsupported content encoding "${encoding}"`);
}

/**
 * Request bodies on Fastify as the Express app reads them (`json({ limit })` from
 * body-parser), so that the API answers the same on both adapters:
 *
 * - `application/json` is parsed; an empty body is `{}`; anything but an object or an
 *   array, or malformed JSON, is 400 `malformed JSON body`; a charset other than UTF-8 is
 *   415; past `limit` bytes, 413 (Fastify's own error, which HttpErrorFilter knows), also
 *   once inflated: a gzip, deflate or br `Content-Encoding` is decoded, another is 415;
 * - any other body (a form, text, none) is read and ignored: the handler sees no body,
 *   and answers as it does to a request without one. Fastify's defaults would parse text
 *   and answer 415 to other types.
 */
export function expressLikeJsonBodies(fastify: FastifyInstance, limit: number): void {
  fastify.removeAllContentTypeParsers();
  fastify.addContentTypeParser(
    '*',
    { parseAs: 'buffer', bodyLimit: limit },
    (req, body: Buffer, done: (err: Error | null, body?: unknown) => void) => {
      const contentType = req.headers['content-type'];
      if (!isJson(contentType)) return done(null, undefined);
      const charset = charsetOf(contentType as string);
      if (charset !== undefined && !charset.startsWith('utf-')) {
        return done(
          bodyError(415, 'charset.unsupported', `unsupported charset "${charset.toUpperCase()}"`),
        );
      }
      let text: string;
      try {
        const encoding = String(req.headers['content-encoding'] ?? 'identity').toLowerCase();
        text = decode(encoding, body, limit).toString('utf8');
      } catch (e) {
        return done(e as Error);
      }
      if (text.length === 0) return done(null, {});
      // body-parser's strict mode: the first non-blank character opens an object or array
      const first = text.trimStart()[0];
      if (first !== '{' && first !== '[') {
        return done(bodyError(400, 'entity.parse.failed', 'malformed JSON body'));
      }
      try {
        done(null, JSON.parse(text));
      } catch {
        done(bodyError(400, 'entity.parse.failed', 'malformed JSON body'));
      }
    },
  );
}
