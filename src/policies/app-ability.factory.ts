import { AbilityBuilder, createMongoAbility, MongoAbility } from '@casl/ability';
import type { Principal } from '@app/realtime';

/**
 * The sample application's policies (PROTOCOL.md "Sample application"), in one place.
 * Subjects are collection names; `audit_logs` and `metrics` guard the admin endpoints.
 *
 * - admin: everything.
 * - manager: reads and writes projects and tasks of its own department, budget included.
 * - member: reads projects and tasks of its own department without `budget`; creates
 *   tasks in its own department (it owns them); updates only tasks it owns or is
 *   assigned to, never its budget or owner. Members delete nothing.
 */
export function defineAppAbility(principal: Principal): MongoAbility {
  const { can, cannot, build } = new AbilityBuilder(createMongoAbility);
  const department = principal.attrs.department;
  const roles = new Set(principal.roles);

  if (roles.has('admin')) {
    can('manage', 'all');
    return build();
  }
  if (typeof department === 'string' && department.length > 0) {
    if (roles.has('manager')) {
      can(['read', 'create', 'update', 'delete'], ['projects', 'tasks'], { department });
    }
    if (roles.has('member')) {
      can('read', ['projects', 'tasks'], { department });
      can('create', 'tasks', { department, ownerId: principal.userId });
      can('update', 'tasks', { department, ownerId: principal.userId });
      can('update', 'tasks', { department, assigneeId: principal.userId });
      if (!roles.has('manager')) {
        cannot('read', 'tasks', ['budget']);
        cannot('update', 'tasks', ['budget', 'ownerId']);
      }
    }
  }
  return build();
}
