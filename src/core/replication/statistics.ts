// Per-relationship replication statistics, the fields of Hyper-V's Measure-VMReplication, counted
// since monitoringStartTime and resettable (Reset-VMReplicationStatistics). Serialisable to JSON.
import type { Clock } from '../../model/clock.ts';
import type { Health } from './health.ts';
import type { State } from './replication-state.ts';

export interface ReplicationStatisticsJSON {
  state: State;
  health: Health;
  /** Milliseconds since the epoch of the last successful cycle; null before the first. */
  lastReplicationTime: number | null;
  /** Bytes tracked but not yet shipped. */
  pendingReplicationSize: number;
  /** Bytes per successful cycle (0 before the first). */
  averageReplicationSize: number;
  maximumReplicationSize: number;
  /** Milliseconds from cut to the replica's acknowledgement, per successful cycle. */
  averageReplicationLatency: number;
  successfulReplicationCount: number;
  missedReplicationCount: number;
  replicationErrors: number;
  monitoringStartTime: number;
  /** Sums behind the averages, so a reloaded object keeps averaging correctly. */
  totalReplicationSize: number;
  totalReplicationLatency: number;
}

export class ReplicationStatistics {
  readonly #clock: Clock;
  #s: ReplicationStatisticsJSON;

  constructor(clock: Clock, initial?: Partial<ReplicationStatisticsJSON>) {
    this.#clock = clock;
    this.#s = {
      state: 'Disabled',
      health: 'Normal',
      lastReplicationTime: null,
      pendingReplicationSize: 0,
      ...zeroCounters(clock.now()),
      ...initial,
    };
  }

  static fromJSON(clock: Clock, json: ReplicationStatisticsJSON): ReplicationStatistics {
    return new ReplicationStatistics(clock, json);
  }

  /** A cycle shipped `bytes` and was acknowledged `latencyMs` after its cut. */
  recordSuccess(cycle: { readonly bytes: number; readonly latencyMs: number; readonly time?: number }): void {
    const s = this.#s;
    s.successfulReplicationCount++;
    s.totalReplicationSize += cycle.bytes;
    s.totalReplicationLatency += cycle.latencyMs;
    s.maximumReplicationSize = Math.max(s.maximumReplicationSize, cycle.bytes);
    s.lastReplicationTime = cycle.time ?? this.#clock.now();
  }

  /** A cycle was due and did not complete (skipped, failed or still running at the next tick). */
  recordMissed(count = 1): void {
    this.#s.missedReplicationCount += count;
  }

  recordError(): void {
    this.#s.replicationErrors++;
  }

  setPending(bytes: number): void {
    this.#s.pendingReplicationSize = bytes;
  }

  setState(state: State, health?: Health): void {
    this.#s.state = state;
    if (health) this.#s.health = health;
  }

  setHealth(health: Health): void {
    this.#s.health = health;
  }

  /** Zeroes the counters and restarts the monitoring window; state, health, pending size and
   * the last replication time are facts, not statistics, and are kept. */
  reset(): void {
    Object.assign(this.#s, zeroCounters(this.#clock.now()));
  }

  toJSON(): ReplicationStatisticsJSON {
    const s = this.#s;
    const n = s.successfulReplicationCount;
    return {
      ...s,
      averageReplicationSize: n ? Math.round(s.totalReplicationSize / n) : 0,
      averageReplicationLatency: n ? Math.round(s.totalReplicationLatency / n) : 0,
    };
  }
}

function zeroCounters(now: number) {
  return {
    averageReplicationSize: 0,
    maximumReplicationSize: 0,
    averageReplicationLatency: 0,
    successfulReplicationCount: 0,
    missedReplicationCount: 0,
    replicationErrors: 0,
    monitoringStartTime: now,
    totalReplicationSize: 0,
    totalReplicationLatency: 0,
  };
}
