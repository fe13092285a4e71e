import { HttpStatus } from '@nestjs/common';
import type { AnyAbility } from '@casl/ability';
import { subject } from '@casl/ability';
import { z, ZodType } from 'zod';
import { FindOptionsWhere, MoreThan, ObjectLiteral, QueryFailedError, Repository } from 'typeorm';
import {
  canOnDoc,
  CollectionRegistry,
  EntityWriter,
  ForbiddenError,
  NotFoundError,
  pickFields,
  Principal,
  RawBodyHttpException,
  readableFields,
  TransactionRunner,
  ValidationError,
  zodDetails,
} from '@app/realtime';
import type { Doc } from '@app/realtime';
import { abilityScope } from './ability-scope';
import { IdempotencyKey } from './idempotency-key.entity';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const listPaging = {
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().regex(UUID, 'must be a cursor returned by a previous page').optional(),
};

/** `version` from the body or from `If-Match` (`"3"`, `W/"3"` or `3`). */
export function expectedVersion(
  bodyVersion: unknown,
  ifMatch: string | undefined,
): number | undefined {
  if (bodyVersion !== undefined) return bodyVersion as number;
  if (!ifMatch) return undefined;
  const m = /^(?:W\/)?"?(\d{1,9})"?$/.exec(ifMatch.trim());
  if (!m) {
    throw new ValidationError([
      { path: 'If-Match', message: 'must be the document version, e.g. "3"' },
    ]);
  }
  return Number(m[1]);
}

/** An `Idempotency-Key` header: 1 to 128 visible ASCII characters. */
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,128}$/;

/** The header's value, checked; undefined when the request has none. */
export function idempotencyKeyOf(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (!IDEMPOTENCY_KEY.test(header)) {
    throw new ValidationError([
      { path: 'Idempotency-Key', message: 'must be 1 to 128 visible ASCII characters' },
    ]);
  }
  return header;
}

/** A second INSERT of one primary key (PostgreSQL 23505, SQLite SQLITE_CONSTRAINT_PRIMARYKEY). */
function isDuplicateKey(error: unknown): boolean {
  if (!(error instanceof QueryFailedError)) return false;
  const code = (error.driverError as { code?: unknown } | undefined)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/** Create defaults of the sample collections: the creator owns it, in its department unless given. */
export function ownedInOwnDepartment(
  principal: Principal,
  body: { department?: string },
): { ownerId: string; department?: string } {
  const own = principal.attrs.department;
  return {
    ownerId: principal.userId,
    department: body.department ?? (typeof own === 'string' ? own : undefined),
  };
}

export interface DocumentServiceConfig<T extends ObjectLiteral> {
  collection: string;
  create: ZodType<Partial<T>>;
  patch: ZodType<Partial<T> & { version?: number }>;
  /** query-string filters of the list endpoint (besides limit and cursor) */
  list: ZodType<Record<string, unknown>>;
  /** fields the server sets on create, e.g. the owner */
  defaults(principal: Principal, body: Partial<T>): Partial<T>;
  /** checks that need the database (e.g. the referenced project exists) */
  validateReferences?(body: Partial<T>, repo: Repository<T>): Promise<void>;
}

/**
 * The REST behaviour shared by the sample app's collections: ability-scoped listing with
 * cursor paging, per-document ABAC checks (before and after a write), field redaction,
 * optimistic concurrency (409 with the current document) and writes through the
 * TransactionRunner so that change capture publishes them after commit.
 *
 * Documents another department owns answer 404 (their existence is not revealed); a
 * document the user may read but not change answers 403.
 */
export class DocumentService<T extends ObjectLiteral & { id: string; version: number }> {
  constructor(
    private readonly repo: Repository<T>,
    private readonly transactions: TransactionRunner,
    private readonly registry: CollectionRegistry,
    private readonly writer: EntityWriter,
    private readonly config: DocumentServiceConfig<T>,
  ) {}

  private get fields(): string[] {
    return this.registry.get(this.config.collection)?.fields ?? [];
  }

  private toDoc(entity: T): Doc {
    const collection = this.registry.get(this.config.collection);
    return collection ? this.registry.toDoc(collection, entity) : { ...entity };
  }

  /** The document as this ability may see it. */
  present(ability: AnyAbility, entity: T): Doc {
    const doc = this.toDoc(entity);
    const fields = readableFields(ability, this.config.collection, doc, this.fields);
    return fields.length === this.fields.length ? doc : pickFields(doc, fields);
  }

  private parse<S>(schema: ZodType<S>, input: unknown): S {
    const parsed = schema.safeParse(input ?? {});
    if (!parsed.success) throw new ValidationError(zodDetails(parsed.error));
    return parsed.data;
  }

  async list(ability: AnyAbility, query: Record<string, unknown>) {
    // the token may travel in the query string; it is not a filter
    const { access_token: _token, ...rest } = query;
    const { limit, cursor, ...filters } = this.parse(
      (this.config.list as z.AnyZodObject).extend(listPaging).strict(),
      rest,
    ) as Record<string, unknown> & { limit: number; cursor?: string };
    const scope = abilityScope(ability, 'read', this.config.collection);
    if (scope === null) return { items: [], nextCursor: null };
    const base = { ...filters, ...(cursor ? { id: MoreThan(cursor) } : {}) };
    const where = (scope ?? [{}]).map((alt) => ({ ...alt, ...base })) as FindOptionsWhere<T>[];
    const rows = await this.repo.find({ where, order: { id: 'ASC' } as never, take: limit + 1 });
    const more = rows.length > limit;
    const page = rows.slice(0, limit);
    const items = page
      .filter((row) => canOnDoc(ability, 'read', this.config.collection, this.toDoc(row)))
      .map((row) => this.present(ability, row));
    return { items, nextCursor: more ? page[page.length - 1].id : null };
  }

  /**
   * `forUpdate` (inside a write transaction): locks the row until commit on PostgreSQL, so
   * that concurrent writes of one document take turns. Without it both would read the same
   * version and pass the `version` check; the later one's EntityWriter.update would then
   * fail with StaleEntityError (a 500) instead of answering 409 with the current document.
   * SQLite needs no lock: the TransactionRunner runs its transactions one at a time.
   */
  private async findReadable(
    ability: AnyAbility,
    id: string,
    repo = this.repo,
    forUpdate = false,
  ): Promise<T> {
    if (!UUID.test(id)) throw new NotFoundError(`no ${this.config.collection} document ${id}`);
    const row = await this.writer.findOne(repo.manager, this.repo.target, id, { lock: forUpdate });
    if (!row || !canOnDoc(ability, 'read', this.config.collection, this.toDoc(row))) {
      throw new NotFoundError(`no ${this.config.collection} document ${id}`);
    }
    return row;
  }

  async get(ability: AnyAbility, id: string): Promise<Doc> {
    return this.present(ability, await this.findReadable(ability, id));
  }

  /**
   * With an `Idempotency-Key` (`key`), a create is made once per user and key: the key is
   * stored in the create's own transaction, and a request that brings a stored key answers
   * with the document that key made (as the user may see it now) instead of making another,
   * before its body is validated or authorized again (the key names the request; a repeat
   * is not compared with the first body). Two requests racing with one key: on SQLite the
   * transactions take turns, so the second finds the key; on PostgreSQL the second INSERT
   * of the key waits for the first transaction, fails when it commits, rolls back, and the
   * request answers as a retry.
   */
  async create(
    principal: Principal,
    ability: AnyAbility,
    body: unknown,
    idempotencyKey?: string,
  ): Promise<Doc> {
    const key = idempotencyKeyOf(idempotencyKey);
    if (key) {
      // a repeat of a create that succeeded answers as the first did, whatever has changed
      // since (the project deleted, the user's role): its document exists
      const earlier = await this.storedKey(principal, key);
      if (earlier) return this.replay(ability, earlier);
    }
    const input = this.parse(this.config.create, body);
    const values = { ...input, ...this.config.defaults(principal, input) };
    if (!ability.can('create', subject(this.config.collection, { ...values }))) {
      throw new ForbiddenError(`not permitted to create this ${this.config.collection} document`);
    }
    await this.config.validateReferences?.(values, this.repo);
    let outcome: T | IdempotencyKey;
    try {
      outcome = await this.transactions.transaction(
        async (manager) => {
          if (key) {
            // SQLite: a request that raced this one past the lookup above committed first
            const earlier = await this.storedKey(principal, key, manager);
            if (earlier) return earlier;
          }
          const saved = await manager
            .getRepository<T>(this.repo.target)
            .save(this.repo.create(values as T));
          if (key) {
            await manager.getRepository(IdempotencyKey).insert({
              userId: principal.userId,
              key,
              collection: this.config.collection,
              documentId: saved.id,
              createdAt: new Date().toISOString(),
            });
          }
          return saved;
        },
        { actor: principal },
      );
    } catch (e) {
      if (!key || !isDuplicateKey(e)) throw e;
      const earlier = await this.storedKey(principal, key);
      if (!earlier) throw e;
      outcome = earlier;
    }
    if (outcome instanceof IdempotencyKey) return this.replay(ability, outcome);
    return this.present(ability, outcome);
  }

  /** The user's stored `Idempotency-Key`, if a create has committed it. */
  private storedKey(
    principal: Principal,
    key: string,
    manager = this.repo.manager,
  ): Promise<IdempotencyKey | null> {
    return manager.getRepository(IdempotencyKey).findOneBy({ userId: principal.userId, key });
  }

  /** The answer to a create whose `Idempotency-Key` was already used: the document it made. */
  private async replay(ability: AnyAbility, earlier: IdempotencyKey): Promise<Doc> {
    if (earlier.collection !== this.config.collection) {
      throw new ValidationError([
        {
          path: 'Idempotency-Key',
          message: `already used for a ${earlier.collection} document`,
        },
      ]);
    }
    const row = await this.repo.findOne({
      where: { id: earlier.documentId } as FindOptionsWhere<T>,
    });
    if (!row || !canOnDoc(ability, 'read', this.config.collection, this.toDoc(row))) {
      throw new NotFoundError(
        `the ${this.config.collection} document made with this Idempotency-Key no longer exists`,
      );
    }
    return this.present(ability, row);
  }

  async update(
    principal: Principal,
    ability: AnyAbility,
    id: string,
    body: unknown,
    ifMatch?: string,
  ): Promise<Doc> {
    const { version: bodyVersion, ...patch } = this.parse(this.config.patch, body);
    const version = expectedVersion(bodyVersion, ifMatch);
    const collection = this.config.collection;
    const saved = await this.transactions.transaction(
      async (manager) => {
        const repo = manager.getRepository<T>(this.repo.target);
        const current = await this.findReadable(ability, id, repo, true);
        const before = this.toDoc(current);
        if (!canOnDoc(ability, 'update', collection, before)) {
          throw new ForbiddenError(`not permitted to update ${collection} document ${id}`);
        }
        for (const field of Object.keys(patch)) {
          if (!ability.can('update', subject(collection, before), field)) {
            throw new ForbiddenError(`not permitted to update field ${field}`);
          }
        }
        if (version !== undefined && version !== current.version) {
          throw new RawBodyHttpException(this.present(ability, current), HttpStatus.CONFLICT);
        }
        if (!canOnDoc(ability, 'update', collection, this.toDoc({ ...current, ...patch }))) {
          throw new ForbiddenError(
            `not permitted to make ${collection} document ${id} what the patch asks`,
          );
        }
        await this.config.validateReferences?.(patch as Partial<T>, repo);
        return this.writer.update(manager, current, patch as Partial<T>);
      },
      { actor: principal },
    );
    return this.present(ability, saved);
  }

  async remove(
    principal: Principal,
    ability: AnyAbility,
    id: string,
    bodyVersion: unknown,
    ifMatch?: string,
  ): Promise<void> {
    const version = expectedVersion(bodyVersion, ifMatch);
    const collection = this.config.collection;
    await this.transactions.transaction(
      async (manager) => {
        const repo = manager.getRepository<T>(this.repo.target);
        const current = await this.findReadable(ability, id, repo, true);
        if (!canOnDoc(ability, 'delete', collection, this.toDoc(current))) {
          throw new ForbiddenError(`not permitted to delete ${collection} document ${id}`);
        }
        if (version !== undefined && version !== current.version) {
          throw new RawBodyHttpException(this.present(ability, current), HttpStatus.CONFLICT);
        }
        await repo.remove(current);
      },
      { actor: principal },
    );
  }
}
