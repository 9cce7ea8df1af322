// Which recovery points a replica keeps, as a pure function of the points, the policy and the
// time. Hyper-V semantics: the latest point, plus one point per hour for the last `additional`
// hours (the last point of each hour), plus the app-consistent ones among those hours.
import { TerminalError } from '../../model/errors.ts';
import type { Consistency } from '../types.ts';

export interface RecoveryPoint {
  readonly sequence: number;
  /** The cut time (ms since the epoch). */
  readonly time: number;
  readonly consistency: Consistency;
  readonly cutId: string;
}

export interface RetentionPolicy {
  /** Hourly points kept besides the latest, 0-24. */
  readonly additional: number;
  /** Interval of app-consistent points (ms); when set, each kept hour also keeps its last app-consistent point. */
  readonly appConsistentEvery?: number;
}

const HOUR = 3_600_000;

export function checkRetention(p: RetentionPolicy): void {
  if (!Number.isInteger(p.additional) || p.additional < 0 || p.additional > 24) {
    throw new TerminalError('invalid-argument', `recoveryPoints.additional must be an integer 0-24, got ${p.additional}`);
  }
  if (p.appConsistentEvery !== undefined && !(p.appConsistentEvery >= 0)) {
    throw new TerminalError('invalid-argument', `appConsistentEvery must be >= 0 ms, got ${p.appConsistentEvery}`);
  }
}

/**
 * Sequences to keep. Hours are UTC clock hours. Each of the `additional` complete hours before the
 * one holding `now` contributes its last point, and the current hour its last point, which is
 * normally the latest; with app-consistent points on, each of those hours also keeps its last
 * app-consistent point. Keeping the current hour's candidates matters: pruning runs after every
 * apply, and a point dropped while its hour is open could never become that hour's point.
 * An hour without points contributes nothing: a replica never invents points.
 */
export function selectRetained(points: readonly RecoveryPoint[], policy: RetentionPolicy, now: number): Set<number> {
  const keep = new Set<number>();
  if (!points.length) return keep;
  const sorted = [...points].sort((a, b) => a.sequence - b.sequence);
  keep.add(sorted[sorted.length - 1].sequence);
  const current = Math.floor(now / HOUR);
  const lastOfHour = new Map<number, RecoveryPoint>();
  const lastAppOfHour = new Map<number, RecoveryPoint>();
  for (const p of sorted) {
    const hour = Math.floor(p.time / HOUR);
    if (hour > current || hour < current - policy.additional) continue;
    // Sequence order is cut order; ties in time go to the later sequence.
    const prev = lastOfHour.get(hour);
    if (!prev || p.time >= prev.time) lastOfHour.set(hour, p);
    if (p.consistency === 'app') {
      const prevApp = lastAppOfHour.get(hour);
      if (!prevApp || p.time >= prevApp.time) lastAppOfHour.set(hour, p);
    }
  }
  for (const p of lastOfHour.values()) keep.add(p.sequence);
  if (policy.appConsistentEvery) for (const p of lastAppOfHour.values()) keep.add(p.sequence);
  return keep;
}
