import type { AnyAbility } from '@casl/ability';
import { rulesToQuery } from '@casl/ability/extra';

/**
 * The SQL scope of what an ability may do on a collection, as TypeORM `where` alternatives
 * (OR of ANDs of equalities). `null`: nothing is permitted; `[{}]`: everything;
 * `undefined`: the rules use operators we do not translate — filter in memory instead.
 */
export function abilityScope(
  ability: AnyAbility,
  action: string,
  collection: string,
): Record<string, unknown>[] | null | undefined {
  const query = rulesToQuery(ability, action, collection, (rule) =>
    rule.inverted ? { $not: rule.conditions } : rule.conditions,
  );
  if (query === null) return null;
  if (query.$and?.length) return undefined;
  if (!query.$or) return [{}];
  const alternatives: Record<string, unknown>[] = [];
  for (const condition of query.$or as Record<string, unknown>[]) {
    for (const value of Object.values(condition)) {
      if (value !== null && typeof value === 'object') return undefined;
    }
    alternatives.push(condition);
  }
  return alternatives;
}
