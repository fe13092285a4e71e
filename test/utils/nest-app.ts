import type { INestApplication, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { setupRealtime } from '@app/realtime';

/**
 * An app module of a test's own (not the sample app), with the library's transports, on the
 * adapter of the e2e pass (HTTP_ADAPTER; Fastify unless it says express), listening on a
 * free port of 127.0.0.1.
 */
export async function startOnTestAdapter(module: Type): Promise<INestApplication> {
  const app =
    process.env.HTTP_ADAPTER === 'express'
      ? await NestFactory.create(module, { logger: ['error'] })
      : await NestFactory.create(module, new FastifyAdapter(), { logger: ['error'] });
  setupRealtime(app);
  await app.listen(0, '127.0.0.1');
  return app;
}
