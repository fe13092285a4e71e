import type { INestApplicationContext } from '@nestjs/common';
import { WsAdapter } from '@nestjs/platform-ws';
import type { IncomingMessage } from 'node:http';
import type { WebSocket } from 'ws';
import { REALTIME_OPTIONS } from '../realtime.module-definition';
import { DEFAULT_LIMITS, RealtimeModuleOptions } from '../realtime.options';
import { ConnectionRegistry } from './connection-registry';

/** The remote address of a request, for limits and the audit log. */
export function remoteOf(req: IncomingMessage): { ip: string | null; userAgent: string | null } {
  return { ip: req.socket.remoteAddress ?? null, userAgent: req.headers['user-agent'] ?? null };
}

/**
 * WsAdapter on the app's own HTTP port, with the realtime rules applied before the
 * upgrade: the configured path, the frame size limit (1009 past it), and connection
 * attempts per IP (HTTP 429 instead of an upgrade). Messages are parsed by the gateway
 * itself (PROTOCOL.md's `{type,id,data}`), not by Nest's `{event,data}` router.
 */
export class RealtimeWsAdapter extends WsAdapter {
  constructor(private readonly app: INestApplicationContext) {
    super(app);
  }

  create(port: number, options: Record<string, unknown> = {}): any {
    const realtime = this.app.get<RealtimeModuleOptions>(REALTIME_OPTIONS);
    const registry = this.app.get(ConnectionRegistry);
    const prefix = (realtime.pathPrefix ?? '/realtime').replace(/\/$/, '');
    return super.create(port, {
      ...options,
      path: `${prefix}/ws`,
      maxPayload: realtime.limits?.maxFrameBytes ?? DEFAULT_LIMITS.maxFrameBytes,
      perMessageDeflate: false,
      verifyClient: (
        info: { req: IncomingMessage },
        callback: (
          ok: boolean,
          code?: number,
          message?: string,
          headers?: Record<string, string>,
        ) => void,
      ) => {
        registry.allowAttempt(remoteOf(info.req), 'websocket').then(
          (ok) =>
            ok
              ? callback(true)
              : callback(false, 429, 'Too Many Requests', { 'Retry-After': '60' }),
          () => callback(true),
        );
      },
    });
  }

  bindMessageHandlers(): void {
    // the gateway reads messages itself
  }

  /**
   * Only server errors are logged as errors. A client socket's errors (a frame over the
   * size limit, invalid UTF-8) are the client's doing: the socket closes with its code and
   * the gateway logs them at debug level, so that clients cannot flood the error log.
   */
  bindErrorHandler(server: any): any {
    // every socket keeps a listener: an 'error' event without one would crash the process
    server.on('connection', (ws: WebSocket) =>
      ws.on('error', (err: Error) => this.logger.debug(`client socket error: ${err.message}`)),
    );
    server.on('error', (err: Error) => this.logger.error(err));
    return server;
  }
}
