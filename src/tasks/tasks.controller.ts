import { documentController } from '../common/document.controller';
import { TasksService } from './tasks.service';

export const TasksController = documentController(
  'tasks',
  TasksService,
  'status=&assigneeId=&projectId=&priority=&department=',
);
