import { Injectable, OnModuleInit } from '@nestjs/common';
import { InjectDataSource } from '@nestjs/typeorm';
import type { ColumnMetadata } from 'typeorm/metadata/ColumnMetadata';
import type { DataSource, EntityMetadata } from 'typeorm';
import { InjectRealtimeOptions } from '../realtime.module-definition';
import type { RealtimeModuleOptions } from '../realtime.options';
import type { CollectionSchema, Doc, FieldKind } from '../realtime.types';
import { isoDate } from '../common/iso-time';

/** A registered collection: its schema for validation and how to turn an entity into a doc. */
export interface RegisteredCollection {
  schema: CollectionSchema;
  metadata: EntityMetadata;
  /** every field name, in column order */
  fields: string[];
  /** fields that change on every update (update date, version): left out of changedFields */
  bookkeeping: Set<string>;
  versionField?: string;
}

function kindOf(column: ColumnMetadata): FieldKind {
  const t = column.type;
  if (t === Number) return 'number';
  if (t === Boolean) return 'boolean';
  if (t === Date) return 'date';
  if (t === String) return 'string';
  const name = String(typeof t === 'function' ? t.name : t).toLowerCase();
  if (name === 'simple-array' || name.endsWith('[]') || column.isArray) return 'array';
  if (name === 'simple-json' || name === 'json' || name === 'jsonb') return 'json';
  if (/int|float|double|real|decimal|numeric/.test(name)) return 'number';
  if (/bool/.test(name)) return 'boolean';
  if (/date|time/.test(name)) return 'date';
  return 'string';
}

/** Turns a column value into its JSON form (dates as ISO strings). */
function jsonValue(value: unknown): unknown {
  if (value instanceof Date) return isoDate(value);
  if (typeof value === 'bigint') return value.toString();
  return value === undefined ? null : value;
}

/** The registered collections, resolved against the DataSource's entity metadata. */
@Injectable()
export class CollectionRegistry implements OnModuleInit {
  private readonly byName = new Map<string, RegisteredCollection>();
  private readonly byTarget = new Map<unknown, RegisteredCollection>();
  /** name → schema, the form the query validator takes */
  readonly schemas = new Map<string, CollectionSchema>();

  constructor(
    @InjectDataSource() private readonly dataSource: DataSource,
    @InjectRealtimeOptions() private readonly options: RealtimeModuleOptions,
  ) {}

  onModuleInit(): void {
    for (const registration of this.options.collections) {
      if (!this.dataSource.hasMetadata(registration.entity)) {
        throw new Error(
          `RealtimeModule: collection '${registration.name}' names entity ${registration.entity.name}, which the TypeORM DataSource does not know; add it to the DataSource's entities`,
        );
      }
      const metadata = this.dataSource.getMetadata(registration.entity);
      if (metadata.primaryColumns.length !== 1) {
        throw new Error(
          `RealtimeModule: collection '${registration.name}' needs exactly one primary column`,
        );
      }
      const fields: Record<string, FieldKind> = {};
      for (const column of metadata.columns) fields[column.propertyName] = kindOf(column);
      const bookkeeping = new Set<string>();
      if (metadata.updateDateColumn) bookkeeping.add(metadata.updateDateColumn.propertyName);
      if (metadata.versionColumn) bookkeeping.add(metadata.versionColumn.propertyName);
      const schema: CollectionSchema = {
        name: registration.name,
        fields,
        primaryKey: metadata.primaryColumns[0].propertyName,
      };
      const registered: RegisteredCollection = {
        schema,
        metadata,
        fields: Object.keys(fields),
        bookkeeping,
        versionField: metadata.versionColumn?.propertyName,
      };
      this.byName.set(registration.name, registered);
      this.byTarget.set(metadata.target, registered);
      this.schemas.set(registration.name, schema);
    }
  }

  get(name: string): RegisteredCollection | undefined {
    return this.byName.get(name);
  }

  forMetadata(metadata: EntityMetadata | undefined): RegisteredCollection | undefined {
    return metadata ? this.byTarget.get(metadata.target) : undefined;
  }

  /** The entity as a plain JSON document of its columns. */
  toDoc(collection: RegisteredCollection, entity: object): Doc {
    const doc: Doc = {};
    for (const column of collection.metadata.columns) {
      doc[column.propertyName] = jsonValue(column.getEntityValue(entity));
    }
    return doc;
  }

  /** The entity after an update: the saved values over the loaded ones. */
  mergeDoc(collection: RegisteredCollection, before: object, saved: object): Doc {
    const doc: Doc = {};
    for (const column of collection.metadata.columns) {
      const value = column.getEntityValue(saved);
      doc[column.propertyName] = jsonValue(
        value === undefined ? column.getEntityValue(before) : value,
      );
    }
    return doc;
  }
}
