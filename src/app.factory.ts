import { INestApplication, Logger, LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { json, NextFunction, Request, Response } from 'express';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { setupRealtime } from '@app/realtime';
import { AppModule } from './app.module';
import { AppConfig } from './config/app.config';

/** Answers body-parser errors before they reach routing (where they would become 404s). */
function bodyParserErrors(err: any, _req: Request, res: Response, next: NextFunction): void {
  if (!err || typeof err.status !== 'number' || !err.type) return next(err);
  const tooLarge = err.type === 'entity.too.large';
  res.status(err.status).json({
    statusCode: err.status,
    code: tooLarge ? 'payload_too_large' : 'bad_request',
    message: tooLarge
      ? 'request body too large'
      : err.type === 'entity.parse.failed'
        ? 'malformed JSON body'
        : 'unreadable body',
  });
}

const LEVELS: LogLevel[] = ['error', 'warn', 'log', 'debug', 'verbose'];

/** Builds the app (used by main.ts and by the e2e tests, so both run the same thing). */
export async function createApp(config: AppConfig): Promise<INestApplication> {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config), {
    logger: LEVELS.slice(0, LEVELS.indexOf(config.logLevel as LogLevel) + 1),
    bodyParser: false,
  });
  // our own JSON parser, so that its errors (malformed, too large) answer as JSON 400/413
  app.use(json({ limit: '1mb' }));
  app.use(bodyParserErrors);
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
    `listening on http://localhost:${(app.getHttpServer().address() as { port: number }).port} (${config.databaseUrl ? 'PostgreSQL' : 'SQLite'})`,
  );
  return app;
}
