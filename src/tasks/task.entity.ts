import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  PrimaryGeneratedColumn,
  UpdateDateColumn,
  VersionColumn,
} from 'typeorm';

export const TASK_STATUSES = ['todo', 'doing', 'done'] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

@Entity('tasks')
export class Task {
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Index()
  @Column({ type: 'varchar', length: 36 })
  projectId: string;

  @Column({ type: 'varchar', length: 500 })
  title: string;

  @Index()
  @Column({ type: 'varchar', length: 8, default: 'todo' })
  status: TaskStatus;

  @Column({ type: 'integer', default: 3 })
  priority: number;

  @Index()
  @Column({ type: 'varchar', length: 255, nullable: true })
  assigneeId: string | null;

  @Column({ type: 'varchar', length: 255 })
  ownerId: string;

  @Index()
  @Column({ type: 'varchar', length: 100 })
  department: string;

  /** confidential: only admins and managers read it */
  @Column({ type: 'float', nullable: true })
  budget: number | null;

  @Column({ type: 'simple-json' })
  tags: string[];

  @Column({ type: Date, nullable: true })
  dueAt: Date | null;

  @CreateDateColumn()
  createdAt: Date;

  @UpdateDateColumn()
  updatedAt: Date;

  @VersionColumn()
  version: number;
}
