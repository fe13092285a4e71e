import { Inject, Injectable } from '@nestjs/common';
import type { AnyAbility } from '@casl/ability';
import { permittedFieldsOf } from '@casl/ability/extra';
import { subject as asSubject } from '@casl/ability';
import { REALTIME_ABILITY_FACTORY } from '../realtime.constants';
import type { AbilityFactory } from '../realtime.options';
import type { Doc, Principal } from '../realtime.types';

const MAX_CACHED = 10_000;

/**
 * Builds CASL abilities with the application's factory and caches them per
 * (user, roles, attrs), so that every connection and request of a user shares one ability
 * and per-change checks can be memoised per ability.
 */
@Injectable()
export class AbilityService {
  private readonly cache = new Map<string, AnyAbility>();

  constructor(@Inject(REALTIME_ABILITY_FACTORY) private readonly factory: AbilityFactory) {}

  forPrincipal(principal: Principal): AnyAbility {
    const key = `${principal.userId}\u0000${principal.roles.join(',')}\u0000${JSON.stringify(principal.attrs)}`;
    let ability = this.cache.get(key);
    if (!ability) {
      if (this.cache.size >= MAX_CACHED) this.cache.clear();
      ability = this.factory(principal);
      this.cache.set(key, ability);
    }
    return ability;
  }
}

/** `ability.can(action, <doc of collection>)`; marks the doc with its subject type. */
export function canOnDoc(
  ability: AnyAbility,
  action: string,
  collection: string,
  doc: Doc,
): boolean {
  return ability.can(action, asSubject(collection, doc));
}

/** The fields of `doc` that the ability may `read`, or null when it may read every field. */
export function readableFields(
  ability: AnyAbility,
  collection: string,
  doc: Doc,
  allFields: string[],
): string[] {
  return permittedFieldsOf(ability, 'read', asSubject(collection, doc), {
    fieldsFrom: (rule) => rule.fields ?? allFields,
  });
}

/** A copy of `doc` with only `fields`. */
export function pickFields(doc: Doc, fields: readonly string[]): Doc {
  const out: Doc = {};
  for (const f of fields) if (f in doc) out[f] = doc[f];
  return out;
}
