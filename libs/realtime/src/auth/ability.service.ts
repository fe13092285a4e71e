import { Inject, Injectable } from '@nestjs/common';
import type { AnyAbility } from '@casl/ability';
import { permittedFieldsOf } from '@casl/ability/extra';
import { subject as asSubject } from '@casl/ability';
import { REALTIME_ABILITY_FACTORY } from '../realtime.constants';
import type { AbilityFactory } from '../realtime.options';
import type { Doc, Principal } from '../realtime.types';

const MAX_CACHED = 10_000;

/**
 * Builds CASL abilities with the application's factory, caches them per (user, roles,
 * attrs), and interns them by their rules: users whose rules come out identical (every
 * manager of one department, say) share one ability object. A change is then checked once
 * per distinct ability, not once per subscriber, and a connection costs no ability of its own.
 */
@Injectable()
export class AbilityService {
  private readonly byPrincipal = new Map<string, AnyAbility>();
  private readonly byRules = new Map<string, AnyAbility>();

  constructor(@Inject(REALTIME_ABILITY_FACTORY) private readonly factory: AbilityFactory) {}

  forPrincipal(principal: Principal): AnyAbility {
    const key = `${principal.userId}\u0000${principal.roles.join(',')}\u0000${JSON.stringify(principal.attrs)}`;
    let ability = this.byPrincipal.get(key);
    if (!ability) {
      if (this.byPrincipal.size >= MAX_CACHED) {
        this.byPrincipal.clear();
        this.byRules.clear();
      }
      const built = this.factory(principal);
      const rules = rulesKey(built.rules);
      ability = this.byRules.get(rules);
      if (!ability) {
        ability = built;
        this.byRules.set(rules, built);
      }
      this.byPrincipal.set(key, ability);
    }
    return ability;
  }
}

/**
 * JSON of rules that keeps what plain JSON would lose (`undefined`, RegExp, Date), so that
 * two rule sets share a key only when CASL would decide alike on them.
 */
function rulesKey(rules: unknown): string {
  return JSON.stringify(rules, function (this: Record<string, unknown>, key, value) {
    const raw = key === '' ? value : this[key];
    if (raw === undefined) return { $undefined: true };
    if (raw instanceof RegExp) return { $regex: String(raw) };
    if (raw instanceof Date) return { $date: raw.toISOString() };
    return value;
  });
}

const readKeys = new WeakMap<AnyAbility, Map<string, string>>();

/**
 * A key equal for two abilities exactly when their `read` rules on a collection are equal
 * (and so are every read decision and readable field set on its documents), to share
 * per-change work between subscribers whose abilities differ only in other actions.
 */
export function readRulesKey(ability: AnyAbility, collection: string): string {
  let keys = readKeys.get(ability);
  if (!keys) {
    keys = new Map();
    readKeys.set(ability, keys);
  }
  let key = keys.get(collection);
  if (key === undefined) {
    key = rulesKey(ability.rulesFor('read', collection).map((rule) => rule.origin));
    keys.set(collection, key);
  }
  return key;
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
