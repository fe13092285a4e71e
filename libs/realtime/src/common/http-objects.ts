import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * A request as a Nest handler, guard or filter gets it, on either HTTP adapter: Express's
 * (an IncomingMessage with more) or Fastify's (`raw` is the IncomingMessage). Only what
 * both have, so that the library works on either.
 */
export interface HttpRequest {
  headers: IncomingHttpHeaders;
  url?: string;
  /** the client's address as the adapter reads it (its trust-proxy setting applies) */
  ip?: string;
  query?: unknown;
  socket: Socket;
  /** Fastify: the Node request */
  raw?: IncomingMessage;
  /** Express: the URL before any router rewrote `url` */
  originalUrl?: string;
}

/** A response on either adapter: Express's (a ServerResponse with more) or Fastify's reply. */
export type HttpResponse =
  ServerResponse | { raw: ServerResponse; hijack?: () => unknown; sent?: boolean };

/** The Node request under either adapter's. */
export function rawRequest(req: HttpRequest): IncomingMessage {
  return req.raw ?? (req as unknown as IncomingMessage);
}

/** The Node response under either adapter's. */
export function rawResponse(res: HttpResponse): ServerResponse {
  return 'raw' in res ? res.raw : res;
}

/** The request's path, without the query string (for the audit log). */
export function pathOf(req: HttpRequest): string {
  const url = req.originalUrl ?? rawRequest(req).url ?? '';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/**
 * Tells the adapter that the handler writes the response itself, to the end, on the Node
 * response (a stream). Fastify would otherwise answer when the handler returns; Express
 * leaves an `@Res()` response alone.
 */
export function takeOver(res: HttpResponse): ServerResponse {
  if ('raw' in res && typeof res.hijack === 'function') res.hijack();
  return rawResponse(res);
}

interface ExpressLike {
  status(code: number): { json(body: unknown): unknown };
}
interface FastifyLike {
  code(code: number): { send(body: unknown): unknown };
}

/**
 * Answers `status` with `body` as JSON, through the adapter's own reply when it has one
 * (not a Fastify reply already hijacked: Fastify would send nothing; the Node response
 * then gets it).
 */
export function sendJson(res: HttpResponse, status: number, body: unknown): void {
  const r = res as Partial<ExpressLike & FastifyLike>;
  if ('raw' in res && typeof r.code === 'function' && res.sent !== true) {
    (r as FastifyLike).code(status).send(body);
  } else if (typeof (res as unknown as Record<string, unknown>).json === 'function') {
    (r as ExpressLike).status(status).json(body);
  } else {
    const out = rawResponse(res);
    const text = JSON.stringify(body);
    out.statusCode = status;
    out.setHeader('Content-Type', 'application/json; charset=utf-8');
    out.setHeader('Content-Length', Buffer.byteLength(text));
    out.end(text);
  }
}
