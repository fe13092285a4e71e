import type { INestApplication } from '@nestjs/common';
import { RealtimeWsAdapter } from './connections/realtime-ws.adapter';

/**
 * Wires the parts of the library that live on the application object: the WebSocket
 * adapter on the app's HTTP port and the shutdown hooks (so connections end with 1001
 * and the audit log is flushed). Call it before `app.listen()`.
 */
export function setupRealtime(app: INestApplication): INestApplication {
  app.useWebSocketAdapter(new RealtimeWsAdapter(app));
  app.enableShutdownHooks();
  return app;
}
