import type { Driver, EntityMetadata } from 'typeorm';

/** The entity's table, escaped for the driver (`"schema"."table"`). */
export function tableOf(metadata: EntityMetadata, driver: Driver): string {
  return metadata.tablePath
    .split('.')
    .map((part) => driver.escape(part))
    .join('.');
}

/**
 * Can a row of this entity be read with `SELECT <columns> … WHERE <primary key>` and set
 * on the entity column by column, as find() would load it? Not when find() skips
 * soft-deleted rows or unselected columns, or reads a column through an expression
 * (spatial types, virtual properties), or the key is a relation or embedded column.
 */
export function readsPlainly(metadata: EntityMetadata): boolean {
  return (
    !metadata.deleteDateColumn &&
    metadata.primaryColumns.length > 0 &&
    metadata.primaryColumns.every((c) => !c.relationMetadata && !c.embeddedMetadata) &&
    metadata.columns.every(
      (c) =>
        !c.isVirtual &&
        !c.isVirtualProperty &&
        c.isSelect !== false &&
        !['geometry', 'geography'].includes(String(c.type)),
    )
  );
}
