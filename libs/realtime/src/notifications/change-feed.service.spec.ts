import type { ChangeRecord } from '../realtime.types';
import { ChangeFeedService } from './change-feed.service';
import type { ChangeLogService } from './change-log.service';
import { InProcessChangeBus } from './in-process-change-bus';

const change = (seq: number): ChangeRecord => ({
  seq: String(seq),
  database: 'default',
  collection: 'tasks',
  documentId: `d${seq}`,
  operation: 'update',
  before: null,
  after: { id: `d${seq}` },
  changedFields: [],
  actorId: null,
  timestamp: '2026-11-29T00:00:00.000Z',
  version: null,
});

/** The change log as the feed sees it: a head, and what a range read would find. */
function fakeLog(committed: ChangeRecord[], failures = 0) {
  const reads: [number, number][] = [];
  let failing = failures;
  const log = {
    head: async () => 0,
    range: async (after: number, before: number) => {
      reads.push([after, before]);
      if (failing-- > 0) throw new Error('database unavailable');
      return committed.filter((c) => Number(c.seq) > after && Number(c.seq) < before);
    },
  };
  return { log: log as unknown as ChangeLogService, reads };
}

async function startFeed(committed: ChangeRecord[], failures = 0) {
  const bus = new InProcessChangeBus();
  const { log, reads } = fakeLog(committed, failures);
  const feed = new ChangeFeedService(bus, log);
  const delivered: string[] = [];
  feed.onChanges((changes) => delivered.push(...changes.map((c) => c.seq)));
  await feed.onApplicationBootstrap();
  feed.onApplicationShutdown(); // no poller: only what the test publishes
  return { bus, feed, delivered, reads };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));
const settle = async () => {
  for (let i = 0; i < 5; i++) await turn();
};

describe('ChangeFeedService', () => {
  it('commits published out of order within one event-loop turn: delivered in seq order, the log not read', async () => {
    const { bus, delivered, reads } = await startFeed([]);
    bus.publish([change(2)]);
    bus.publish([change(3)]);
    bus.publish([change(1)]);
    await settle();
    expect(delivered).toEqual(['1', '2', '3']);
    expect(reads).toEqual([]);
  });

  it('a gap still open after the turn is read from the log; a seq not there was rolled back', async () => {
    // seq 1 committed but its message was lost; seq 2 rolled back
    const { bus, delivered, reads } = await startFeed([change(1)]);
    bus.publish([change(3)]);
    await settle();
    expect(reads).toEqual([[0, 3]]);
    expect(delivered).toEqual(['1', '3']);
    bus.publish([change(1)]); // a late duplicate changes nothing
    bus.publish([change(4)]);
    await settle();
    expect(delivered).toEqual(['1', '3', '4']);
  });

  it('a log read that fails is retried 100 ms later, with nothing else to trigger it', async () => {
    // seq 1 committed but its message was lost, and the first read of the gap fails
    const { bus, delivered, reads } = await startFeed([change(1)], 1);
    bus.publish([change(2)]);
    await settle();
    expect(reads).toEqual([[0, 2]]);
    expect(delivered).toEqual([]); // 2 waits behind the gap
    await new Promise((resolve) => setTimeout(resolve, 150));
    await settle();
    expect(reads).toEqual([
      [0, 2],
      [0, 2],
    ]);
    expect(delivered).toEqual(['1', '2']);
  });

  it("a quiet feed hands a change over at once, after its commit and before the turn ends; busy, it batches to the turn's end", async () => {
    const { bus, feed } = await startFeed([]);
    const batches: string[][] = [];
    feed.onChanges((changes) => batches.push(changes.map((c) => c.seq)));
    feed.quietMs = 10_000; // long enough that nothing below is quiet by chance
    await settle();
    bus.publish([change(1)]); // a new feed is quiet
    expect(batches).toEqual([]); // not inside the commit that published it
    await Promise.resolve();
    expect(batches).toEqual([['1']]); // but before this turn's I/O and timers
    // right after a dispatch (its frames are still leaving): the turn's changes go together
    bus.publish([change(2)]);
    bus.publish([change(3)]);
    await Promise.resolve();
    expect(batches).toEqual([['1']]);
    await turn();
    expect(batches).toEqual([['1'], ['2', '3']]);
    bus.publish([change(4)]); // within quietMs of the last dispatch: still batched
    await Promise.resolve();
    expect(batches).toEqual([['1'], ['2', '3']]);
    await turn();
    expect(batches).toEqual([['1'], ['2', '3'], ['4']]);
    feed.quietMs = 20;
    await new Promise((resolve) => setTimeout(resolve, 40)); // quiet again
    bus.publish([change(5)]);
    await Promise.resolve();
    expect(batches).toEqual([['1'], ['2', '3'], ['4'], ['5']]);
  });

  it('a handler that throws, even something that is not an Error, leaves the feed able to go quiet again', async () => {
    const { bus, feed } = await startFeed([]);
    const batches: string[][] = [];
    feed.onChanges(() => {
      throw undefined;
    });
    feed.onChanges((changes) => batches.push(changes.map((c) => c.seq)));
    (feed as unknown as { logger: { error: () => void } }).logger.error = () => undefined;
    feed.quietMs = 20;
    await settle();
    bus.publish([change(1)]);
    await Promise.resolve();
    expect(batches).toEqual([['1']]); // the handlers after the throwing one still ran
    await new Promise((resolve) => setTimeout(resolve, 40));
    bus.publish([change(2)]);
    await Promise.resolve();
    expect(batches).toEqual([['1'], ['2']]); // at once again: the feed did not stay busy
  });
});
