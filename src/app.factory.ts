import { INestApplication, Logger, LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { setupRealtime } from '@app/realtime';
import { AppModule } from './app.module';
import { AppConfig } from './config/app.config';

const LEVELS: LogLevel[] = ['error', 'warn', 'log', 'debug', 'verbose'];

/** Builds the app (used by main.ts and by the e2e tests, so both run the same thing). */
export async function createApp(config: AppConfig): Promise<INestApplication> {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config), {
    logger: LEVELS.slice(0, LEVELS.indexOf(config.logLevel as LogLevel) + 1),
    bodyParser: true,
  });
  app.useBodyParser('json', { limit: '1mb' });
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
