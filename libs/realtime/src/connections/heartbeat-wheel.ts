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
  /** the slot the next member joins */
  private nextJoin = 0;
  /** the slot the next tick beats */
  private nextBeat = 0;

  constructor(
    readonly intervalMs: number,
    private readonly beat: (member: T) => void,
  ) {
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

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), this.tickMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
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
