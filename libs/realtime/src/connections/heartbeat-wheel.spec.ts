import { HeartbeatWheel, MAX_HEARTBEAT_SLOTS } from './heartbeat-wheel';

interface Member {
  name: string;
  heartbeatSlot: number;
}
const member = (name: string): Member => ({ name, heartbeatSlot: -1 });

describe('HeartbeatWheel', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('beats every member once per interval, a slot at a time', () => {
    const beats: string[] = [];
    const wheel = new HeartbeatWheel<Member>(30_000, (m) => beats.push(m.name));
    expect(wheel.slots.length).toBe(MAX_HEARTBEAT_SLOTS);
    expect(wheel.tickMs).toBe(1000);
    const members = Array.from({ length: 90 }, (_, i) => member(`m${i}`));
    for (const m of members) wheel.add(m);
    // joined together, spread over every slot
    expect(wheel.slots.map((s) => s.size)).toEqual(Array(30).fill(3));
    wheel.start();
    jest.advanceTimersByTime(1000);
    expect(beats).toEqual(['m0', 'm30', 'm60']);
    jest.advanceTimersByTime(29_000);
    expect(beats.length).toBe(90);
    expect(new Set(beats).size).toBe(90);
    jest.advanceTimersByTime(30_000);
    expect(beats.length).toBe(180);
    for (const m of members) expect(beats.filter((b) => b === m.name)).toEqual([m.name, m.name]);
    wheel.stop();
    jest.advanceTimersByTime(60_000);
    expect(beats.length).toBe(180);
  });

  it('never ticks faster than every 100 ms; a short interval has fewer slots', () => {
    const beats: string[] = [];
    const wheel = new HeartbeatWheel<Member>(1000, (m) => beats.push(m.name));
    expect(wheel.slots.length).toBe(10);
    expect(wheel.tickMs).toBe(100);
    const one = new HeartbeatWheel<Member>(50, () => undefined);
    expect(one.slots.length).toBe(1);
    expect(one.tickMs).toBe(50);
    // never longer than the interval allows: 1 234 ms in 12 slots of 102 ms
    const odd = new HeartbeatWheel<Member>(1234, () => undefined);
    expect([odd.slots.length, odd.tickMs]).toEqual([12, 102]);
    expect(odd.slots.length * odd.tickMs).toBeLessThanOrEqual(1234);
    const m = member('a');
    wheel.add(m);
    wheel.start();
    jest.advanceTimersByTime(3000);
    expect(beats).toEqual(['a', 'a', 'a']);
    wheel.stop();
  });

  it('keeps every member beaten once per interval when a busy event loop makes its ticks late', async () => {
    jest.useRealTimers();
    // 10 slots of 100 ms, one member each, and other work that blocks the event loop for
    // 40 ms every 130 ms: ticks counted from when the last one ran (setInterval) drift by
    // the lateness of each and manage about 35 in 4.5 s; against fixed deadlines the 40
    // due by 4 s are all beaten
    const beats = new Map<string, number>();
    const wheel = new HeartbeatWheel<Member>(1000, (m) => {
      beats.set(m.name, (beats.get(m.name) ?? 0) + 1);
    });
    const busy = setInterval(() => {
      const until = Date.now() + 40;
      while (Date.now() < until); // someone else's work
    }, 130);
    const members = Array.from({ length: 10 }, (_, i) => member(`m${i}`));
    for (const m of members) wheel.add(m);
    wheel.start();
    await new Promise((resolve) => setTimeout(resolve, 4500));
    wheel.stop();
    clearInterval(busy);
    const short = members.filter((m) => (beats.get(m.name) ?? 0) < 4).map((m) => m.name);
    expect(short).toEqual([]);
  });

  it('refuses an interval that is not a positive number', () => {
    for (const bad of [0, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => new HeartbeatWheel<Member>(bad, () => undefined)).toThrow(
        /heartbeatIntervalMs must be a positive number/,
      );
    }
  });

  it('forgets a removed member, also when a beat removes it or another of its slot', () => {
    const wheel: HeartbeatWheel<Member> = new HeartbeatWheel<Member>(100, (m) => {
      beats.push(m.name);
      wheel.remove(m); // as a heartbeat timeout drops the connection
      if (m.name === 'a') wheel.remove(c);
    });
    const beats: string[] = [];
    const [a, b, c] = [member('a'), member('b'), member('c')];
    for (const m of [a, b, c]) wheel.add(m);
    expect(wheel.size).toBe(3);
    wheel.tick();
    expect(beats).toEqual(['a', 'b']);
    expect(wheel.size).toBe(0);
    expect([a.heartbeatSlot, b.heartbeatSlot, c.heartbeatSlot]).toEqual([-1, -1, -1]);
    wheel.add(b);
    wheel.add(b); // twice: still once
    expect(wheel.size).toBe(1);
    wheel.remove(a); // not on it: nothing
    expect(wheel.size).toBe(1);
  });
});
