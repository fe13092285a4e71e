import type { ConflictStrategy } from './conflict';
import { currentDocument, RestWriter } from './rest-writer';
import { TokenSource } from './token';
import type { PendingWrite } from './types';

interface Call {
  method: string;
  url: string;
  body: unknown;
  auth: string | null;
  idempotencyKey: string | null;
}

/** A scripted fetch: each call takes the next answer; no network involved. */
function scriptedFetch(answers: (Response | Error)[]) {
  const calls: Call[] = [];
  const fetchImpl = (async (url: string, init: RequestInit) => {
    const headers = new Headers(init.headers);
    calls.push({
      method: init.method ?? 'GET',
      url,
      body: init.body ? JSON.parse(String(init.body)) : undefined,
      auth: headers.get('authorization'),
      idempotencyKey: headers.get('idempotency-key'),
    });
    const answer = answers.shift();
    if (!answer) throw new Error('unexpected request');
    if (answer instanceof Error) throw answer;
    return answer;
  }) as unknown as typeof fetch;
  return { calls, fetchImpl };
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

function writer(answers: (Response | Error)[], strategy: ConflictStrategy = 'server-wins') {
  const { calls, fetchImpl } = scriptedFetch(answers);
  let n = 0;
  const tokens = new TokenSource(() => `token-${++n}`);
  return {
    calls,
    writer: new RestWriter({
      apiBase: 'http://app/api',
      fetchImpl,
      tokens,
      strategyFor: () => strategy,
    }),
  };
}

const task = { id: 't1', title: 'A', status: 'todo', version: 3 };
const update: PendingWrite = {
  opId: 'op',
  tabId: 'tab',
  order: 1,
  createdAt: 1,
  collection: 'tasks',
  kind: 'update',
  documentId: 't1',
  data: { status: 'done' },
  version: 3,
  base: task,
  attempts: 0,
};

describe('RestWriter', () => {
  it('PATCHes with the expected version in the body and a Bearer token', async () => {
    const { writer: w, calls } = writer([json(200, { ...task, status: 'done', version: 4 })]);
    const result = await w.execute(update);
    expect(calls).toEqual([
      {
        method: 'PATCH',
        url: 'http://app/api/tasks/t1',
        body: { status: 'done', version: 3 },
        auth: 'Bearer token-1',
        idempotencyKey: null,
      },
    ]);
    expect(result).toEqual({
      send: { kind: 'settled' },
      outcome: { status: 'applied', document: { ...task, status: 'done', version: 4 } },
    });
  });

  it('POSTs creates and DELETEs with the version in the body', async () => {
    const { writer: w, calls } = writer([
      json(201, { ...task, id: 'new' }),
      new Response(null, { status: 204 }),
    ]);
    await w.execute({
      ...update,
      kind: 'create',
      documentId: 'local:1',
      data: { title: 'A' },
      version: undefined,
    });
    await w.execute({ ...update, kind: 'delete', data: undefined });
    expect(calls.map((c) => [c.method, c.url, c.body])).toEqual([
      ['POST', 'http://app/api/tasks', { title: 'A' }],
      ['DELETE', 'http://app/api/tasks/t1', { version: 3 }],
    ]);
  });

  it('sends a create with its write id as Idempotency-Key, the same on every attempt', async () => {
    const create: PendingWrite = {
      ...update,
      opId: 'op-create-7',
      kind: 'create',
      documentId: 'local:7',
      data: { title: 'A' },
      version: undefined,
    };
    const { writer: w, calls } = writer([
      new TypeError('fetch failed'),
      json(201, { ...task, id: 'new' }),
    ]);
    expect((await w.execute(create)).send).toEqual({ kind: 'offline' });
    expect((await w.execute(create)).outcome).toEqual({
      status: 'applied',
      document: { ...task, id: 'new' },
    });
    expect(calls.map((c) => [c.method, c.idempotencyKey])).toEqual([
      ['POST', 'op-create-7'],
      ['POST', 'op-create-7'],
    ]);
  });

  it('server-wins: a 409 settles with the server’s document', async () => {
    const current = { ...task, title: 'B', version: 5 };
    const { writer: w, calls } = writer([json(409, current)], 'server-wins');
    const result = await w.execute(update);
    expect(calls).toHaveLength(1);
    expect(result.outcome).toEqual({
      status: 'conflict',
      strategy: 'server-wins',
      document: current,
      server: current,
    });
  });

  it('client-wins: re-applies the patch on the current version', async () => {
    const current = { ...task, title: 'B', version: 5 };
    const final = { ...current, status: 'done', version: 6 };
    const { writer: w, calls } = writer([json(409, current), json(200, final)], 'client-wins');
    const result = await w.execute(update);
    expect(calls.map((c) => c.body)).toEqual([
      { status: 'done', version: 3 },
      { status: 'done', version: 5 },
    ]);
    expect(result.outcome).toEqual({
      status: 'conflict',
      strategy: 'client-wins',
      document: final,
      server: current,
    });
  });

  it('merge: sends what the merge function decided', async () => {
    const current = { ...task, title: 'B', version: 5 };
    const { writer: w, calls } = writer(
      [json(409, current), json(200, { ...current, status: 'done', title: 'A+B', version: 6 })],
      (_base, local, server) => ({ ...server, status: local.status, title: 'A+B' }),
    );
    const result = await w.execute(update);
    expect(calls[1].body).toEqual({ status: 'done', title: 'A+B', version: 5 });
    expect(result.outcome).toMatchObject({ status: 'conflict', strategy: 'merge' });
  });

  it('gives up after a bounded number of conflict rounds and takes the server’s document', async () => {
    const answers = [1, 2, 3, 4, 5].map((v) => json(409, { ...task, version: 10 + v }));
    const { writer: w, calls } = writer(answers, 'client-wins');
    const result = await w.execute(update);
    expect(calls).toHaveLength(4);
    expect(result.outcome).toMatchObject({ status: 'conflict', document: { version: 14 } });
  });

  it('reports a network failure as offline and keeps the write', async () => {
    const { writer: w } = writer([new TypeError('Failed to fetch')]);
    expect(await w.execute(update)).toEqual({ send: { kind: 'offline' } });
  });

  it('retries later on 503, honouring Retry-After', async () => {
    const { writer: w } = writer([
      new Response('', { status: 503, headers: { 'retry-after': '2' } }),
    ]);
    expect(await w.execute(update)).toEqual({ send: { kind: 'retry', delayMs: 2000 } });
  });

  it('asks for a new token once on 401', async () => {
    const { writer: w, calls } = writer([json(401, {}), json(200, task)]);
    await w.execute(update);
    expect(calls.map((c) => c.auth)).toEqual(['Bearer token-1', 'Bearer token-2']);
  });

  it('rejects for good on 400 with the server’s error', async () => {
    const { writer: w } = writer([
      json(400, { statusCode: 400, code: 'invalid_query', message: 'title: required' }),
    ]);
    expect((await w.execute(update)).outcome).toEqual({
      status: 'rejected',
      error: { code: 'invalid_query', message: 'title: required', status: 400, details: undefined },
    });
  });

  it('a delete of something already gone is done', async () => {
    const { writer: w } = writer([json(404, { code: 'not_found' })]);
    const result = await w.execute({ ...update, kind: 'delete', data: undefined });
    expect(result.outcome).toEqual({ status: 'applied', document: null });
  });

  it('an update of something deleted on the server is a conflict the server won', async () => {
    const { writer: w } = writer([json(404, { code: 'not_found' })], 'client-wins');
    const result = await w.execute(update);
    expect(result.outcome).toEqual({
      status: 'conflict',
      strategy: 'client-wins',
      document: null,
      server: null,
    });
  });
});

describe('currentDocument', () => {
  it('reads the document bare or wrapped', () => {
    expect(currentDocument(task)).toBe(task);
    expect(currentDocument({ current: task })).toBe(task);
    expect(currentDocument({ statusCode: 409, details: { current: task } })).toBe(task);
    expect(currentDocument({ statusCode: 409 })).toBeNull();
  });
});
