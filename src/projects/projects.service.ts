import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import type { Repository } from 'typeorm';
import { CollectionRegistry, EntityWriter, TransactionRunner } from '@app/realtime';
import { DocumentService, ownedInOwnDepartment } from '../common/document.service';
import { Project } from './project.entity';
import { CreateProject, ListProjects, PatchProject } from './projects.schemas';

@Injectable()
export class ProjectsService extends DocumentService<Project> {
  constructor(
    @InjectRepository(Project) repo: Repository<Project>,
    transactions: TransactionRunner,
    registry: CollectionRegistry,
    writer: EntityWriter,
  ) {
    super(repo, transactions, registry, writer, {
      collection: 'projects',
      create: CreateProject as never,
      patch: PatchProject as never,
      list: ListProjects,
      defaults: ownedInOwnDepartment,
    });
  }
}
