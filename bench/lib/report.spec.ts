import { ratioAgainst, readDelayTable, slowChangesTable, type Results } from './report';

/** A result with one target whose paced series has these per-change figures. */
function results(
  worst: (number | null)[],
  serverWait: number[] | undefined,
  loadgenWait: number[] | undefined,
  steal?: number[],
): Results {
  const paced = {
    scenario: 'paced',
    worstPerChangeMs: worst,
    serverWaitPerChangeMs: serverWait,
    loadgenWaitPerChangeMs: loadgenWait,
    stealPerChangeMs: steal,
  };
  const burst = { scenario: 'burst', worstPerChangeMs: [5] };
  return {
    targets: [{ label: 'ours', runs: [{ n: 1000, scenarios: [burst, paced] }] }],
  } as unknown as Results;
}

describe("slowChangesTable (the report's slowest paced changes)", () => {
  it('lists the three slowest changes, a lost one first, then the median, with their waits', () => {
    const t = slowChangesTable(
      results(
        [12.5, null, 30.25, 8, 21],
        [0.1, 0, 7.5, 0, 0.2],
        [0, 0, 0.25, 0, 12],
        [0, 0, 0, 0, 20],
      ),
    );
    expect(t.rows).toEqual([
      ['ours', '1,000', '#2', 'not delivered', '0.00', '0.00', '', '0'],
      ['ours', '1,000', '#3', '30.3', '7.50', '0.25', '', '0'],
      ['ours', '1,000', '#5', '21.0', '0.20', '12.00', '', '20'],
      ['ours', '1,000', '#1 (median)', '12.5', '0.10', '0.00', '', '0'],
    ]);
  });

  it("shows the busiest threads' waits beside the sums, server / load generator", () => {
    const r = results([12.5, 30.25, 8], [0.1, 7.5, 0], [0, 0.25, 0]);
    const paced = r.targets[0].runs[0].scenarios[1];
    paced.serverBusiestWaitPerChangeMs = [0, 0.5, NaN];
    paced.loadgenBusiestWaitPerChangeMs = [0, 0.25, 0];
    expect(slowChangesTable(r).rows).toEqual([
      ['ours', '1,000', '#2', '30.3', '7.50', '0.25', '0.50 / 0.25', ''],
      ['ours', '1,000', '#1', '12.5', '0.10', '0.00', '0.00 / 0.00', ''],
      ['ours', '1,000', '#3', '8.00', '0.00', '0.00', '– / 0.00', ''],
    ]);
  });

  it('has no median row when the median is among the three slowest (a short series)', () => {
    expect(
      slowChangesTable(results([3, 9, 6], [0, 0, 0], [0, 0, 0])).rows.map((r) => r[2]),
    ).toEqual(['#2', '#3', '#1']);
  });

  it('has no median row when no change was delivered', () => {
    expect(slowChangesTable(results([null, null], [0, 1], [2, 3])).rows).toEqual([
      ['ours', '1,000', '#1', 'not delivered', '0.00', '2.00', '', ''],
      ['ours', '1,000', '#2', 'not delivered', '1.00', '3.00', '', ''],
    ]);
  });

  it('has no rows for a series without per-change waits (a report from before them)', () => {
    expect(slowChangesTable(results([12, 30], undefined, undefined)).rows).toEqual([]);
  });
});

describe('readDelayTable (what kernel receive times leave out)', () => {
  it('has a row per scenario that measured it, none for one with read times or no reads', () => {
    const r = {
      targets: [
        {
          label: 'bare ws',
          runs: [
            {
              n: 5000,
              scenarios: [
                {
                  scenario: 'burst',
                  loadgenReadDelay: { reads: 50_000, meanUs: 812.4, maxUs: 41_250, unstamped: 3 },
                },
                {
                  scenario: 'paced',
                  loadgenReadDelay: { reads: 0, meanUs: 0, maxUs: 0, unstamped: 0 },
                },
              ],
            },
          ],
        },
        { label: 'Socket.IO', runs: [{ n: 5000, scenarios: [{ scenario: 'paced' }] }] },
      ],
    } as unknown as Results;
    expect(readDelayTable(r).rows).toEqual([
      ['bare ws', '5,000', 'burst', '50,000', '812', '41.3', '3'],
    ]);
  });
});

describe('ratioAgainst', () => {
  it('shows more than two decimals only where two would hide the side of the target', () => {
    expect(ratioAgainst(0.697, 0.7)).toBe('0.697');
    expect(ratioAgainst(0.6999, 0.7)).toBe('0.6999');
    expect(ratioAgainst(0.702, 0.7)).toBe('0.70');
    expect(ratioAgainst(0.7, 0.7)).toBe('0.70');
    expect(ratioAgainst(0.66, 0.7)).toBe('0.66');
    expect(ratioAgainst(1.976, 0.7)).toBe('1.98');
  });
});
