import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { seedTask, startTestApp, type TestApp, USERS } from './utils/app';

/**
 * The demo page and the client library in a real Chromium against the real app: one
 * shared connection for three tabs, leader hand-off without loss or doubles, offline
 * writes replayed in order, conflicts resolved per strategy.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ROOT = join(__dirname, '..');
const ARTIFACTS = join(ROOT, 'test-artifacts');

jest.setTimeout(120_000);

if (!existsSync(CHROMIUM) && process.env.REQUIRE_SERVICES === '1') {
  // CI installs Chromium (.ci/run): there, a missing browser is a failure, not a skip
  throw new Error(`REQUIRE_SERVICES=1 but there is no Chromium at ${CHROMIUM}`);
}
const describeWithChromium = existsSync(CHROMIUM) ? describe : describe.skip;
if (!existsSync(CHROMIUM)) {
  console.warn(
    `!!! SKIPPING browser e2e: no Chromium at ${CHROMIUM} (apt-get install -y chromium)`,
  );
}

describeWithChromium('demo page in Chromium', () => {
  let t: TestApp;
  let browser: Browser;
  let context: BrowserContext;
  let pages: Page[] = [];
  let projectId: string;
  let task: Record<string, any>;

  const api = (method: string, path: string, body?: unknown) =>
    t.api(USERS.alice, method, path, body);

  async function websocketConnections(): Promise<number | undefined> {
    const r = await api('GET', '/metrics');
    expect(r.status).toBe(200);
    const line = String(r.body)
      .split('\n')
      .find((l) => l.startsWith('realtime_connections{transport="websocket"}'));
    return line ? Number(line.split(' ').at(-1)) : undefined;
  }

  /** Polls the server until `check` holds; explicit deadline, no fixed sleeps. */
  async function eventually<T>(
    read: () => Promise<T>,
    check: (v: T) => boolean,
    ms = 10_000,
  ): Promise<T> {
    const deadline = Date.now() + ms;
    let value = await read();
    while (!check(value)) {
      if (Date.now() > deadline)
        throw new Error(`condition not met in ${ms} ms; last: ${JSON.stringify(value)}`);
      await new Promise((r) => setTimeout(r, 100));
      value = await read();
    }
    return value;
  }

  const role = (page: Page) => page.getByTestId('role-badge').getAttribute('data-role');
  const titleOf = (page: Page, id: string) =>
    page.locator(`[data-task-id="${id}"] [data-testid="task-title"]`);

  async function openTab(): Promise<Page> {
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error('page error:', e.message));
    await page.goto(t.http);
    await page.getByTestId('board').waitFor();
    await page.waitForSelector('[data-testid="subscription-status"][data-status="live"]');
    pages.push(page);
    return page;
  }

  async function waitForTitle(page: Page, id: string, title: string, timeout = 10_000) {
    await page.waitForFunction(
      ([taskId, expected]) =>
        (
          document.querySelector(
            `[data-task-id="${taskId}"] [data-testid="task-title"]`,
          ) as HTMLInputElement | null
        )?.value === expected,
      [id, title] as const,
      { timeout },
    );
  }

  async function editTitle(page: Page, id: string, title: string) {
    const input = titleOf(page, id);
    await input.fill(title);
    await input.press('Enter');
  }

  beforeAll(async () => {
    // The bundle is git-ignored; build it so `jest` alone works as well as `npm test`.
    execFileSync(process.execPath, [join(ROOT, 'scripts/build-client.mjs')], { stdio: 'ignore' });
    t = await startTestApp('sqlite');
    task = await seedTask(t, { title: 'Write the release notes', priority: 4 });
    projectId = task.projectId;
    await seedTask(
      t,
      { title: 'Review the SSE transport', status: 'doing', priority: 3 },
      projectId,
    );
    await seedTask(
      t,
      { title: 'Fix flaky reconnect test', status: 'done', priority: 2 },
      projectId,
    );
    await seedTask(
      t,
      { title: 'Plan the offline queue', priority: 5, assigneeId: 'carol' },
      projectId,
    );
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-quic',
        '--headless',
      ],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
  });

  afterAll(async () => {
    await browser?.close();
    await t?.close();
  });

  it('logs in through the form and shows the live board', async () => {
    const page = await context.newPage();
    await page.goto(t.http);
    await page.getByTestId('login-username').selectOption('alice');
    await page.getByTestId('login-password').fill('alice-password');
    await page.getByTestId('login-submit').click();
    await page.waitForSelector('[data-testid="subscription-status"][data-status="live"]');
    await expect(titleOf(page, task.id).inputValue()).resolves.toBe('Write the release notes');
    expect(await page.getByTestId('task-card').count()).toBe(4);
    pages.push(page);
  });

  it('three tabs share exactly one WebSocket connection', async () => {
    await openTab();
    await openTab();
    const roles = await Promise.all(pages.map(role));
    expect(roles.sort()).toEqual(['follower', 'follower', 'leader']);
    await eventually(websocketConnections, (n) => n === 1);
    for (const page of pages) {
      await expect(page.getByTestId('task-card').count()).resolves.toBe(4);
      await expect(page.getByTestId('connection-badge').getAttribute('data-state')).resolves.toBe(
        'open',
      );
    }
  });

  it('a task changed over REST appears in all three tabs', async () => {
    const r = await api('PATCH', `/api/tasks/${task.id}`, {
      title: 'Release notes, reviewed',
      version: task.version,
    });
    expect(r.status).toBe(200);
    task = r.body;
    await Promise.all(pages.map((page) => waitForTitle(page, task.id, 'Release notes, reviewed')));
  });

  it('saves a screenshot of the demo page with live data', async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    await pages[0].screenshot({ path: join(ARTIFACTS, 'demo.png'), fullPage: true });
  });

  it('the leader closes: another tab leads within 2 s and 20 changes made meanwhile arrive once in each tab', async () => {
    const leaderIndex = (await Promise.all(pages.map(role))).indexOf('leader');
    const leader = pages[leaderIndex];
    const remaining = pages.filter((p) => p !== leader);

    // Twenty inserts spread over the hand-off: some before, some during, some after.
    const writes = (async () => {
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) {
        const r = await api('POST', '/api/tasks', {
          projectId,
          title: `handoff-${String(i).padStart(2, '0')}`,
          department: 'eng',
          priority: 1,
        });
        expect(r.status).toBe(201);
        ids.push(r.body.id);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      return ids;
    })();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const closedAt = Date.now();
    await leader.close();
    pages = remaining;
    await Promise.any(
      remaining.map((p) =>
        p.waitForSelector('[data-testid="role-badge"][data-role="leader"]', { timeout: 2_000 }),
      ),
    );
    expect(Date.now() - closedAt).toBeLessThan(2_000);
    const ids = await writes;

    for (const page of remaining) {
      await page.waitForFunction(
        (expected) =>
          expected.every((id: string) => document.querySelector(`[data-task-id="${id}"]`) !== null),
        ids,
        { timeout: 10_000 },
      );
      const applied = await page.evaluate(
        (expected) =>
          (window as any).demo.applied.filter((c: any) => expected.includes(c.documentId)),
        ids,
      );
      // Each insert applied exactly once: no change lost, none doubled.
      expect(applied.map((c: any) => c.documentId).sort()).toEqual([...ids].sort());
      expect(new Set(applied.map((c: any) => c.seq)).size).toBe(20);
      const titles = await page.$$eval('[data-testid="task-title"]', (els) =>
        els.map((e) => (e as HTMLInputElement).value).filter((v) => v.startsWith('handoff-')),
      );
      expect(titles.sort()).toEqual(
        Array.from({ length: 20 }, (_, i) => `handoff-${String(i).padStart(2, '0')}`),
      );
    }
    expect((await Promise.all(remaining.map(role))).sort()).toEqual(['follower', 'leader']);
    await eventually(websocketConnections, (n) => n === 1);
  });

  it('edits made offline reach the server in order once the browser is back online', async () => {
    const follower = pages[(await Promise.all(pages.map(role))).indexOf('follower')];
    const before = (await api('GET', `/api/tasks/${task.id}`)).body;

    await context.setOffline(true);
    await follower.waitForSelector('[data-testid="network-badge"][data-online="false"]');
    await editTitle(follower, task.id, 'offline edit 1');
    await editTitle(follower, task.id, 'offline edit 2');
    await follower.waitForSelector('[data-testid="pending-badge"][data-count="2"]');
    // Applied optimistically, not sent.
    await expect(titleOf(follower, task.id).inputValue()).resolves.toBe('offline edit 2');
    expect((await api('GET', `/api/tasks/${task.id}`)).body.title).toBe(before.title);

    await context.setOffline(false);
    const after = await eventually(
      async () => (await api('GET', `/api/tasks/${task.id}`)).body,
      (doc) => doc.version === before.version + 2,
    );
    // Two versions later and the second edit last: both went out, in order.
    expect(after.title).toBe('offline edit 2');
    for (const page of pages) await waitForTitle(page, task.id, 'offline edit 2');
    await follower.waitForSelector('[data-testid="pending-badge"][data-count="0"]', {
      state: 'attached',
    });
    task = after;
  });

  it('refuses a bad query with invalid_query, without disturbing the other live queries', async () => {
    const page = pages[0];
    const error = await page.evaluate(
      () =>
        new Promise<{ code: string; details?: unknown[] }>((resolve) =>
          (window as any).demo.client.subscribe(
            { collection: 'no_such_collection', includeInitialData: true },
            { onError: resolve },
          ),
        ),
    );
    expect(error.code).toBe('invalid_query');
    await expect(page.getByTestId('subscription-status').getAttribute('data-status')).resolves.toBe(
      'live',
    );
  });

  it('works over Server-Sent Events as well', async () => {
    const login = await t.api(null, 'POST', '/auth/login', {
      username: 'alice',
      password: 'alice-password',
    });
    const sseContext = await browser.newContext();
    await sseContext.addInitScript(
      (auth) => {
        localStorage.setItem('realtime-demo-auth', JSON.stringify(auth));
      },
      {
        username: 'alice',
        password: 'alice-password',
        accessToken: login.body.accessToken,
        expiresAt: Date.now() + login.body.expiresIn * 1000,
      },
    );
    try {
      const page = await sseContext.newPage();
      await page.goto(`${t.http}/?transport=sse`);
      await page.waitForSelector('[data-testid="connection-badge"][data-state="open"]');
      await expect(page.getByTestId('connection-badge').textContent()).resolves.toBe('open · sse');
      const current = (await api('GET', `/api/tasks/${task.id}`)).body;
      const r = await api('PATCH', `/api/tasks/${task.id}`, {
        title: 'changed for SSE',
        version: current.version,
      });
      expect(r.status).toBe(200);
      task = r.body;
      await waitForTitle(page, task.id, 'changed for SSE');
    } finally {
      await sseContext.close();
    }
  });

  it.each(['server-wins', 'client-wins'] as const)(
    'a conflicting edit resolves per strategy: %s',
    async (strategy) => {
      const page = pages[0];
      await page.getByTestId('conflict-strategy').selectOption(strategy);
      const stale = (await api('GET', `/api/tasks/${task.id}`)).body;

      await context.setOffline(true);
      await page.waitForSelector('[data-testid="network-badge"][data-online="false"]');
      await editTitle(page, task.id, `mine (${strategy})`);
      // Meanwhile someone else changes the same task.
      const theirs = await api('PATCH', `/api/tasks/${task.id}`, {
        title: `theirs (${strategy})`,
        version: stale.version,
      });
      expect(theirs.status).toBe(200);
      await context.setOffline(false);

      const toast = page.getByTestId('toast').filter({ hasText: `resolved: ${strategy}` });
      await toast.first().waitFor({ timeout: 10_000 });
      const expected = strategy === 'server-wins' ? `theirs (${strategy})` : `mine (${strategy})`;
      const server = await eventually(
        async () => (await api('GET', `/api/tasks/${task.id}`)).body,
        (doc) => doc.title === expected,
      );
      expect(server.version).toBe(
        strategy === 'server-wins' ? stale.version + 1 : stale.version + 2,
      );
      // Every tab ends consistent with the server.
      for (const p of pages) await waitForTitle(p, task.id, expected);
      task = server;
    },
  );
});
