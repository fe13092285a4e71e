/** Something with a heartbeat: the wheel keeps its slot on it (-1: on no wheel). */
export interface HeartbeatMember {
  heartbeatSlot: number;
}

/** The interval is cut into at most this many slots… */
export const MAX_HEARTBEAT_SLOTS = 30;
/** …and a slot is never shorter than this (one wake-up per slot). */
export const MIN_HEARTBEAT_SLOT_MS = 100;

/**
 * Heartbeats spread over their interval: each member is put in one of `slots` (round
 * robin, as it joins), and a timer beats one slot every `intervalMs / slots`, so every
 * member still gets one heartbeat per interval, but a server with N connections sends N/30
 * pings a second instead of N at once. All at once (as until 2026-12-06), 10 000 WebSocket
 * clients held the event loop for 0.14–0.18 s of ping writes, and 0.27–0.46 s until its
 * next turn, on the bench machine: every delivery due meanwhile waited (README.md,
 * Performance).
 *
 * A member's first heartbeat comes within one interval of joining, as with one timer for
 * all. Members that join together (a reconnect storm) land in different slots.
 */
export class HeartbeatWheel<T extends HeartbeatMember> {
  readonly slots: Set<T>[];
  readonly tickMs: number;
  private timer?: NodeJS.Timeout;
  /** when the next slot is due (performance.now()) */
  private due = 0;
  /** the slot the next member joins */
  private nextJoin = 0;
  /** the slot the next tick beats */
  private nextBeat = 0;

  constructor(
    readonly intervalMs: number,
    private readonly beat: (member: T) => void,
  ) {
    if (!Number.isFinite(intervalMs) || intervalMs <= 0) {
      throw new Error(`heartbeatIntervalMs must be a positive number of ms, not ${intervalMs}`);
    }
    const count = Math.max(
      1,
      Math.min(MAX_HEARTBEAT_SLOTS, Math.floor(intervalMs / MIN_HEARTBEAT_SLOT_MS)),
    );
    this.slots = Array.from({ length: count }, () => new Set<T>());
    // rounded down: a member's heartbeats come at most `intervalMs` apart, never more
    this.tickMs = Math.max(1, Math.floor(intervalMs / count));
  }

  get size(): number {
    let size = 0;
    for (const slot of this.slots) size += slot.size;
    return size;
  }

  /**
   * Beats a slot every `tickMs`, against fixed deadlines rather than with `setInterval`,
   * which counts each period from when its callback ran: 30 late ticks would add up to an
   * interval far longer than `intervalMs` on a busy event loop. A late timer beats every
   * slot that is due (at most one round).
   */
  start(): void {
    if (this.timer) return;
    this.due = performance.now() + this.tickMs;
    this.arm();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, this.due - performance.now()));
    this.timer.unref();
  }

  private onTimer(): void {
    // a timer may fire a fraction of a ms before its deadline as performance.now() reads it
    const now = performance.now() + 1;
    for (let beaten = 0; this.due <= now && beaten < this.slots.length; beaten++) {
      this.tick();
      this.due += this.tickMs;
    }
    // stalled for a whole round or more: every slot was just beaten; go on from now
    if (this.due <= now) this.due = now + this.tickMs;
    if (this.timer !== undefined) this.arm();
  }

  add(member: T): void {
    if (member.heartbeatSlot >= 0) return;
    member.heartbeatSlot = this.nextJoin;
    this.slots[this.nextJoin].add(member);
    this.nextJoin = (this.nextJoin + 1) % this.slots.length;
  }

  remove(member: T): void {
    if (member.heartbeatSlot < 0) return;
    this.slots[member.heartbeatSlot]?.delete(member);
    member.heartbeatSlot = -1;
  }

  /** Beats the next slot; a beat may remove members (from this slot too). */
  tick(): void {
    const slot = this.slots[this.nextBeat];
    this.nextBeat = (this.nextBeat + 1) % this.slots.length;
    for (const member of slot) this.beat(member);
  }
}
