import { Inject, Injectable, Logger, OnApplicationBootstrap } from '@nestjs/common';
import { TransactionRunner } from '@app/realtime';
import { APP_CONFIG, AppConfig } from '../config/app.config';
import { Project } from '../projects/project.entity';
import { Task } from '../tasks/task.entity';

/**
 * Seeds a small board (two projects, a handful of tasks) into an empty database, so that
 * the demo page shows something on a fresh `npm start`. Written through the
 * TransactionRunner like any other write, so the changes are in the change log too.
 */
@Injectable()
export class DemoDataService implements OnApplicationBootstrap {
  private readonly logger = new Logger(DemoDataService.name);

  constructor(
    private readonly transactions: TransactionRunner,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    if (!this.config.demoData) return;
    await this.transactions.transaction(async (manager) => {
      if ((await manager.count(Project)) > 0) return;
      const projects = manager.getRepository(Project);
      const tasks = manager.getRepository(Task);
      const eng = await projects.save(
        projects.create({ name: 'Realtime launch', ownerId: 'bob', department: 'eng' }),
      );
      const sales = await projects.save(
        projects.create({ name: 'Q4 pipeline', ownerId: 'dave', department: 'sales' }),
      );
      const day = 24 * 3600 * 1000;
      const seed: Partial<Task>[] = [
        {
          projectId: eng.id,
          title: 'Write the protocol tests',
          status: 'doing',
          priority: 4,
          assigneeId: 'carol',
          ownerId: 'bob',
          department: 'eng',
          budget: 1200,
          tags: ['testing'],
          dueAt: new Date(Date.now() + 2 * day),
        },
        {
          projectId: eng.id,
          title: 'Benchmark fan-out',
          status: 'todo',
          priority: 3,
          assigneeId: 'bob',
          ownerId: 'bob',
          department: 'eng',
          budget: 800,
          tags: ['perf'],
          dueAt: new Date(Date.now() - day),
        },
        {
          projectId: eng.id,
          title: 'Ship the client library',
          status: 'done',
          priority: 5,
          assigneeId: 'carol',
          ownerId: 'carol',
          department: 'eng',
          budget: 3000,
          tags: ['client'],
          dueAt: null,
        },
        {
          projectId: sales.id,
          title: 'Call the big customer',
          status: 'todo',
          priority: 5,
          assigneeId: 'dave',
          ownerId: 'dave',
          department: 'sales',
          budget: 150,
          tags: ['calls'],
          dueAt: new Date(Date.now() + day),
        },
        {
          projectId: sales.id,
          title: 'Update the price list',
          status: 'doing',
          priority: 2,
          assigneeId: null,
          ownerId: 'dave',
          department: 'sales',
          budget: 40,
          tags: [],
          dueAt: null,
        },
      ];
      for (const task of seed) await tasks.save(tasks.create(task));
      this.logger.log('seeded the demo board (2 projects, 5 tasks)');
    });
  }
}
