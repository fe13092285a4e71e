import { z } from 'zod';
import { TASK_STATUSES } from './task.entity';

const uuid = z.string().uuid('must be a uuid');
const id = z.string().min(1).max(255);
const tags = z.array(z.string().min(1).max(50)).max(50);
const dueAt = z
  .string()
  .datetime({ offset: true, message: 'must be an ISO 8601 date-time' })
  .transform((s) => new Date(s))
  .nullable();
const budget = z.number().finite().min(0).max(1e12).nullable();

export const CreateTask = z
  .object({
    projectId: uuid,
    title: z.string().trim().min(1).max(500),
    status: z.enum(TASK_STATUSES).default('todo'),
    priority: z.number().int().min(1).max(5).default(3),
    assigneeId: id.nullable().default(null),
    department: z.string().min(1).max(100).optional(),
    budget: budget.default(null),
    tags: tags.default([]),
    dueAt: dueAt.default(null),
  })
  .strict();

export const PatchTask = z
  .object({
    projectId: uuid,
    title: z.string().trim().min(1).max(500),
    status: z.enum(TASK_STATUSES),
    priority: z.number().int().min(1).max(5),
    assigneeId: id.nullable(),
    department: z.string().min(1).max(100),
    budget,
    tags,
    dueAt,
    version: z.number().int().min(1),
  })
  .partial()
  .strict();

export const ListTasks = z.object({
  status: z.enum(TASK_STATUSES).optional(),
  assigneeId: id.optional(),
  projectId: uuid.optional(),
  priority: z.coerce.number().int().min(1).max(5).optional(),
  department: z.string().max(100).optional(),
});
