import { Client } from 'pg';
import { sqlLiteral } from './change-capture.subscriber';

describe('sqlLiteral', () => {
  const escapeLiteral = (value: string) => Client.prototype.escapeLiteral.call(null, value);

  it('writes exactly what node-postgres escapeLiteral writes', () => {
    const samples = [
      '',
      'plain',
      `it's`,
      `''`,
      String.raw`back\slash`,
      String.raw`\'`,
      String.raw`\\`,
      `\\'\n\t\r\0`,
      `$$ dollar $tag$ ; COMMIT; -- not a comment`,
      `"quoted" E'x' U&'d' é 漢字 😀`,
      JSON.stringify({ title: `it's "a" \\ test`, tags: ['a\nb'] }),
    ];
    for (const s of samples) expect(sqlLiteral(s)).toBe(escapeLiteral(s));
  });

  it('agrees with escapeLiteral on random strings of quotes, backslashes and other characters', () => {
    const alphabet = [`'`, '\\', '"', 'a', ' ', '\n', 'é', '😀', '$', ';'];
    let seed = 42;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 2000; i++) {
      const length = Math.floor(next() * 20);
      let s = '';
      for (let k = 0; k < length; k++) s += alphabet[Math.floor(next() * alphabet.length)];
      expect(sqlLiteral(s)).toBe(escapeLiteral(s));
    }
  });
});

describe('ChangeCaptureSubscriber and the copy of typeorm', () => {
  /** Starts capture on a DataSource (SQLite in memory) made by `typeorm`, a module instance. */
  async function startCapture(typeorm: typeof import('typeorm')) {
    const { realtimeEntities } = await import('../realtime.module');
    const { ChangeLogEntry } = await import('./change-log.entity');
    const { CollectionRegistry } = await import('./collection-registry');
    const { InProcessChangeBus } = await import('./in-process-change-bus');
    const { ChangeCaptureSubscriber } = await import('./change-capture.subscriber');
    const dataSource = new typeorm.DataSource({
      type: 'better-sqlite3',
      database: ':memory:',
      entities: realtimeEntities('better-sqlite3'),
      synchronize: true,
    });
    await dataSource.initialize();
    // any entity serves as a collection here: the check concerns the DataSource
    const options = {
      auth: { secret: 'x'.repeat(32) },
      collections: [{ name: 'log', entity: ChangeLogEntry }],
      abilityFactory: () => ({}) as never,
    };
    const registry = new CollectionRegistry(dataSource as never, options as never);
    registry.onModuleInit();
    const capture = new ChangeCaptureSubscriber(
      dataSource as never,
      registry,
      new InProcessChangeBus(),
      options as never,
    );
    return { dataSource, start: () => capture.onModuleInit() };
  }

  it('starts on a DataSource of the library’s own typeorm', async () => {
    const { dataSource, start } = await startCapture(await import('typeorm'));
    expect(start).not.toThrow();
    await dataSource.destroy();
  });

  it('refuses to start on a DataSource of a second copy of typeorm, whose QueryBuilder updates it could not refuse', async () => {
    let second: typeof import('typeorm') | undefined;
    jest.isolateModules(() => {
      second = jest.requireActual<typeof import('typeorm')>('typeorm');
    });
    expect(second).toBeDefined();
    expect(second!.UpdateQueryBuilder).not.toBe((await import('typeorm')).UpdateQueryBuilder);
    const { dataSource, start } = await startCapture(second!);
    expect(start).toThrow(/another copy of typeorm/);
    await dataSource.destroy();
  });
});
