import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import type { Repository } from 'typeorm';
import {
  CollectionRegistry,
  EntityWriter,
  TransactionRunner,
  ValidationError,
} from '@app/realtime';
import { DocumentService, ownedInOwnDepartment } from '../common/document.service';
import { Project } from '../projects/project.entity';
import { Task } from './task.entity';
import { CreateTask, ListTasks, PatchTask } from './tasks.schemas';

@Injectable()
export class TasksService extends DocumentService<Task> {
  constructor(
    @InjectRepository(Task) repo: Repository<Task>,
    @InjectRepository(Project) projects: Repository<Project>,
    transactions: TransactionRunner,
    registry: CollectionRegistry,
    writer: EntityWriter,
  ) {
    super(repo, transactions, registry, writer, {
      collection: 'tasks',
      create: CreateTask as never,
      patch: PatchTask as never,
      list: ListTasks,
      defaults: ownedInOwnDepartment,
      validateReferences: async (body) => {
        if (body.projectId && !(await projects.exists({ where: { id: body.projectId } }))) {
          throw new ValidationError([{ path: 'projectId', message: 'no such project' }]);
        }
        if (body.department === undefined && 'department' in body) {
          throw new ValidationError([{ path: 'department', message: 'required' }]);
        }
      },
    });
  }
}
