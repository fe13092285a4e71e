import { z } from 'zod';

export const CreateProject = z
  .object({
    name: z.string().trim().min(1).max(200),
    department: z.string().min(1).max(100).optional(),
  })
  .strict();

export const PatchProject = z
  .object({
    name: z.string().trim().min(1).max(200),
    department: z.string().min(1).max(100),
    version: z.number().int().min(1),
  })
  .partial()
  .strict();

export const ListProjects = z.object({
  department: z.string().max(100).optional(),
  ownerId: z.string().max(255).optional(),
});
