import { DynamicModule, Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TerminusModule } from '@nestjs/terminus';
import { TypeOrmModule } from '@nestjs/typeorm';
import { HttpErrorFilter, RealtimeModule } from '@app/realtime';
import { AuthController } from './auth/auth.controller';
import { IdempotencyKeySweeper } from './common/idempotency-key.sweeper';
import { APP_CONFIG, AppConfig } from './config/app.config';
import { DemoDataService } from './demo/demo-data.service';
import { databaseOptions } from './database/database.options';
import { HealthController } from './health/health.controller';
import { defineAppAbility } from './policies/app-ability.factory';
import { Project } from './projects/project.entity';
import { ProjectsModule } from './projects/projects.module';
import { overdue } from './tasks/overdue.filter';
import { Task } from './tasks/task.entity';
import { TasksModule } from './tasks/tasks.module';

/** The sample project tracker, configured from a validated AppConfig. */
@Module({})
export class AppModule {
  static forRoot(config: AppConfig): DynamicModule {
    return {
      module: AppModule,
      imports: [
        TypeOrmModule.forRoot(databaseOptions(config)),
        RealtimeModule.forRoot({
          auth: {
            secret: config.jwt.secret,
            publicKey: config.jwt.publicKey,
            privateKey: config.jwt.privateKey,
            issuer: config.jwt.issuer,
            audience: config.jwt.audience,
            tokenTtlSeconds: config.jwt.ttlSeconds,
          },
          collections: [
            { name: 'projects', entity: Project },
            { name: 'tasks', entity: Task },
          ],
          customFilters: { overdue },
          abilityFactory: defineAppAbility,
          heartbeatIntervalMs: config.heartbeatIntervalMs,
          metrics: { eventLoopResolutionMs: config.eventLoopResolutionMs },
          redisUrl: config.redisUrl,
          nativeWrites: config.nativeWrites,
          changeLog: config.changeLog,
          audit: { maxAgeMs: config.auditMaxAgeMs },
          sqliteCheckpoint:
            config.sqliteCheckpointMs === 0
              ? false
              : { intervalMs: config.sqliteCheckpointMs, nice: config.sqliteCheckpointNice },
          limits: Object.fromEntries(
            Object.entries(config.limits).filter(([, v]) => v !== undefined),
          ),
        }),
        TerminusModule,
        ProjectsModule,
        TasksModule,
      ],
      controllers: [AuthController, HealthController],
      providers: [
        { provide: APP_CONFIG, useValue: config },
        { provide: APP_FILTER, useClass: HttpErrorFilter },
        DemoDataService,
        IdempotencyKeySweeper,
      ],
    };
  }
}
