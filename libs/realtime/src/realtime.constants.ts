/** Injection tokens of the realtime library. */
export const REALTIME_ABILITY_FACTORY = Symbol('REALTIME_ABILITY_FACTORY');
export const CHANGE_BUS = Symbol('CHANGE_BUS');

/** Metadata key of the `@Authenticated()` decorator. */
export const AUTHENTICATED_KEY = 'realtime:authenticated';

/** The TypeORM data source name the library captures changes from, and its wire name. */
export const DEFAULT_DATABASE = 'default';
