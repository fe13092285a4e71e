/** The demo users of PROTOCOL.md, seeded in the embedded default and with DEMO_USERS=true. */
export const DEMO_USERS = [
  { username: 'alice', roles: ['admin'], attrs: {} },
  { username: 'bob', roles: ['manager'], attrs: { department: 'eng' } },
  { username: 'carol', roles: ['member'], attrs: { department: 'eng' } },
  { username: 'dave', roles: ['member'], attrs: { department: 'sales' } },
] as const;

/** Demo only: each password is the username followed by `-password`. */
export const demoPassword = (username: string) => `${username}-password`;
