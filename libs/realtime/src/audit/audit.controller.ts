import { Controller, Get, Query } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import { InjectRepository } from '@nestjs/typeorm';
import { z } from 'zod';
import {
  Between,
  FindOptionsWhere,
  LessThan,
  LessThanOrEqual,
  MoreThanOrEqual,
  Repository,
} from 'typeorm';
import { Authenticated } from '../auth/authenticated.decorator';
import { ValidationError } from '../common/realtime.errors';
import { zodDetails } from '../common/zod-details';
import { AuditLog } from './audit-log.entity';

const isoDate = z
  .string()
  .refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 date')
  .transform((s) => new Date(s).toISOString());

const AuditQuery = z
  .object({
    action: z.string().max(64).optional(),
    userId: z.string().max(255).optional(),
    connectionId: z.string().max(64).optional(),
    subscriptionId: z.string().max(64).optional(),
    from: isoDate.optional(),
    to: isoDate.optional(),
    limit: z.coerce.number().int().min(1).max(500).default(100),
    cursor: z
      .string()
      .regex(/^[1-9][0-9]{0,15}$/, 'must be a cursor returned by a previous page')
      .optional(),
  })
  .strict();

/** `GET /admin/audit-logs` (PROTOCOL.md "Audit log API"): newest first, cursor paging. */
@ApiTags('audit')
@Controller('admin/audit-logs')
export class AuditController {
  constructor(@InjectRepository(AuditLog) private readonly repo: Repository<AuditLog>) {}

  @Get()
  @Authenticated({ permission: ['read', 'audit_logs'] })
  @ApiOperation({ summary: 'Read the audit log (needs read on audit_logs)' })
  @ApiOkResponse({ description: '{ items, nextCursor }' })
  async list(@Query() raw: Record<string, unknown>) {
    const parsed = AuditQuery.safeParse(raw);
    if (!parsed.success) throw new ValidationError(zodDetails(parsed.error), 'invalid_query');
    const q = parsed.data;
    const where: FindOptionsWhere<AuditLog> = {};
    if (q.action) where.action = q.action;
    if (q.userId) where.userId = q.userId;
    if (q.connectionId) where.connectionId = q.connectionId;
    if (q.subscriptionId) where.subscriptionId = q.subscriptionId;
    if (q.from && q.to) where.createdAt = Between(q.from, q.to);
    else if (q.from) where.createdAt = MoreThanOrEqual(q.from);
    else if (q.to) where.createdAt = LessThanOrEqual(q.to);
    if (q.cursor) where.id = LessThan(Number(q.cursor));
    const rows = await this.repo.find({ where, order: { id: 'DESC' }, take: q.limit + 1 });
    const more = rows.length > q.limit;
    const items = rows.slice(0, q.limit);
    return {
      items: items.map((r) => ({
        id: String(r.id),
        action: r.action,
        userId: r.userId,
        connectionId: r.connectionId,
        subscriptionId: r.subscriptionId,
        outcome: r.outcome,
        details: r.details,
        ipAddress: r.ipAddress,
        userAgent: r.userAgent,
        createdAt: r.createdAt,
      })),
      nextCursor: more ? String(items[items.length - 1].id) : null,
    };
  }
}
