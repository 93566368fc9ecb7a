/**
 * One shared clock for keepalive pings and idle timeouts. Rather than a
 * timer per connection (re-armed on every message), every connection with
 * the same tick period sits in one set that a single interval walks: the hot
 * path only sets a flag when bytes arrive, and 10 000 idle connections cost
 * one timer.
 *
 * @module
 */

/** Keepalive settings of one connection, in milliseconds; 0 turns a check off. */
export interface KeepaliveSettings {
  /** Send a ping after this long without hearing from the peer. */
  pingInterval: number;
  /** Fail the connection (1011) when nothing arrives this long after a ping. */
  pingTimeout: number;
  /** Close the connection (1001) when the peer sends no message for this long. */
  idleTimeout: number;
}

/** Something the clock visits on every tick. */
export interface Ticking {
  /** Called with the current time: {@linkcode clockNow}. */
  tick(now: number): void;
}

/**
 * The clock's time: `performance.now()` in whole milliseconds. Members keep
 * times from it in their fields, and V8 stores a fractional number there as
 * a separate 16-byte object; a whole one (under 2^31 ms, 24 days of uptime)
 * is stored in the field itself.
 */
export function clockNow(): number {
  return Math.floor(performance.now());
}

interface Wheel {
  members: Set<Ticking>;
  timer: ReturnType<typeof setInterval>;
}

const wheels = new Map<number, Wheel>();

/**
 * How often the checks run for these settings: a quarter of the shortest
 * period, between 10 ms and 1 s, so a deadline is met within 25% (or 1 s).
 */
export function tickPeriod(settings: KeepaliveSettings): number {
  // Called once per connection: no array to loop over (garbage per handshake).
  const shortest = Math.min(
    positiveOr(settings.pingInterval),
    positiveOr(settings.pingTimeout),
    positiveOr(settings.idleTimeout),
  );
  if (shortest === Infinity) return 0;
  return Math.min(1000, Math.max(10, Math.floor(shortest / 4)));
}

/** A setting that is on, or `Infinity` for one that is off (0). */
function positiveOr(value: number): number {
  return value > 0 ? value : Infinity;
}

/**
 * Adds `member` to the clock ticking every `period` ms; {@linkcode leaveClock}
 * takes it off. The interval stops once its last member leaves.
 */
export function joinClock(member: Ticking, period: number): void {
  let wheel = wheels.get(period);
  if (wheel === undefined) {
    const members = new Set<Ticking>();
    const timer = setInterval(() => {
      const now = clockNow();
      for (const each of members) each.tick(now);
    }, period);
    wheel = { members, timer };
    wheels.set(period, wheel);
  }
  wheel.members.add(member);
}

/** Takes `member` off the clock of `period` ms (no-op if it is not on it). */
export function leaveClock(member: Ticking, period: number): void {
  const wheel = wheels.get(period);
  if (wheel === undefined || !wheel.members.delete(member) || wheel.members.size > 0) return;
  clearInterval(wheel.timer);
  wheels.delete(period);
}

/**
 * Checks keepalive settings from user options, throwing `RangeError` for a
 * negative or non-finite value.
 */
export function checkKeepalive(settings: KeepaliveSettings): KeepaliveSettings {
  for (const [name, value] of Object.entries(settings)) {
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
      throw new RangeError(`Option ${name} must be a number of milliseconds >= 0, got ${value}`);
    }
  }
  return settings;
}
