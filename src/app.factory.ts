import { INestApplication, Logger, LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { json, NextFunction, Request, Response } from 'express';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter, NestFastifyApplication } from '@nestjs/platform-fastify';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { join } from 'node:path';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { httpErrorBody, setupRealtime } from '@app/realtime';
import { AppModule } from './app.module';
import { AppConfig } from './config/app.config';
import { expressLikeJsonBodies } from './json-body.fastify';

/** Request bodies past this answer 413. */
const BODY_LIMIT = 1024 * 1024;

/**
 * Express: answers body-parser errors before they reach routing (where they would become
 * 404s), as HttpErrorFilter answers them on Fastify.
 */
function bodyParserErrors(err: any, _req: Request, res: Response, next: NextFunction): void {
  if (!err || typeof err.status !== 'number' || !err.type) return next(err);
  const { status, body } = httpErrorBody(err);
  res.status(status).json(body);
}

const LEVELS: LogLevel[] = ['error', 'warn', 'log', 'debug', 'verbose'];

/**
 * The app on Express or on Fastify (`config.httpAdapter`, env HTTP_ADAPTER): the same API,
 * the same answers (JSON bodies as body-parser reads them, errors as PROTOCOL.md says),
 * the demo page from `public/`.
 */
async function createOnAdapter(config: AppConfig): Promise<INestApplication> {
  const logger = LEVELS.slice(0, LEVELS.indexOf(config.logLevel as LogLevel) + 1);
  const publicDir = join(__dirname, 'public');
  if (config.httpAdapter === 'fastify') {
    const app = await NestFactory.create<NestFastifyApplication>(
      AppModule.forRoot(config),
      new FastifyAdapter({
        // as Node's HTTP server has them under Express (Fastify's defaults: no request
        // timeout, so a client that stops sending its body would hold the socket forever,
        // and 72 s of keep-alive)
        requestTimeout: 300_000,
        keepAliveTimeout: 5_000,
        // routes match as Express's do: a trailing slash and the letters' case do not
        // matter, and a long parameter reaches the handler (which answers 404)
        routerOptions: { ignoreTrailingSlash: true, caseSensitive: false, maxParamLength: 2048 },
        // a URL Fastify cannot route (bad percent-encoding) is answered before Nest sees
        // it: in the same JSON shape as every other error
        frameworkErrors: (error: FastifyError, _req: FastifyRequest, reply: FastifyReply) => {
          const { status, body } = httpErrorBody(error);
          void reply.code(status).send(body);
        },
      }),
      { logger, bodyParser: false },
    );
    expressLikeJsonBodies(app.getHttpAdapter().getInstance(), BODY_LIMIT);
    app.useStaticAssets({ root: publicDir });
    return app;
  }
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config), {
    logger,
    bodyParser: false,
  });
  // our own JSON parser, so that its errors (malformed, too large) answer as JSON 400/413
  app.use(json({ limit: BODY_LIMIT }));
  app.use(bodyParserErrors);
  app.useStaticAssets(publicDir);
  return app;
}

/** Builds the app (used by main.ts and by the e2e tests, so both run the same thing). */
export async function createApp(config: AppConfig): Promise<INestApplication> {
  const app = await createOnAdapter(config);
  setupRealtime(app);
  const document = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('nest-realtime sample app')
      .setDescription('REST API of the sample project tracker; realtime protocol in PROTOCOL.md')
      .addBearerAuth()
      .build(),
  );
  SwaggerModule.setup('docs', app, document);
  return app;
}

export async function startApp(config: AppConfig): Promise<INestApplication> {
  const app = await createApp(config);
  await app.listen(config.port, config.host);
  new Logger('Bootstrap').log(
    `listening on http://localhost:${(app.getHttpServer().address() as { port: number }).port} (${config.databaseUrl ? 'PostgreSQL' : 'SQLite'}, ${config.httpAdapter})`,
  );
  return app;
}
