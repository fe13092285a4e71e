import type { CustomFilterFn } from '@app/realtime';

/** The custom filter `overdue`: `dueAt` is in the past and `status` is not `done`. */
export const overdue: CustomFilterFn = (doc, _params, ctx) => {
  const due = doc.dueAt;
  if (typeof due !== 'string') return false;
  return Date.parse(due) < ctx.now.getTime() && doc.status !== 'done';
};
