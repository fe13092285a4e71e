import { documentController } from '../common/document.controller';
import { ProjectsService } from './projects.service';

export const ProjectsController = documentController(
  'projects',
  ProjectsService,
  'department=&ownerId=',
);
