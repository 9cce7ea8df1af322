// What the primary persists about a relationship, and the policy arithmetic it needs (cycle
// period, retention sent to the replica, the resync window).
import { transition } from './replication-state.ts';
import type { State } from './replication-state.ts';
import type { RetryStateJSON } from './retry.ts';
import type { ReplicationStatisticsJSON } from './statistics.ts';
import type { ResolvedPolicySpec } from '../../model/desired.ts';
import type { SiteSpec } from '../../model/types.generated.ts';
import { parseDuration } from '../../model/units.ts';
import type { CreateReplicaRequest, DiskInfo } from '../../model/replication-api.ts';

/** What the primary persists about a relationship (`<dir>/state.json`). */
export interface PrimaryRecord {
  id: string;
  role: 'Primary';
  vm: string;
  replica: { name: string; endpoint: string; azure?: SiteSpec };
  policy: ResolvedPolicySpec;
  excludeDisks: string[];
  disks: DiskInfo[];
  replicaStoragePath?: string;
  /** Extended replication: the id of the replica relationship on this host whose points are forwarded. */
  forwardOf?: string;
  /** Multi-VM consistency group (cut together with the other members on this host). */
  replicationGroup?: string;
  state: State;
  suspendedBy?: 'operator' | 'engine';
  /** Last sequence cut into the outbox. */
  sequence: number;
  /** Last sequence the replica reported applied. */
  applied: number;
  /** Cut time of the replica's newest point. */
  lastReplicationTime?: number;
  replicatingSince?: number;
  initial?: { method: string; bytesDone: number; bytesTotal: number; startAt?: number };
  resync?: { bytesDone: number; bytesTotal: number; reason: string; /** Sequence of the resync log once sealed: an interrupted transfer resumes instead of comparing again. */ sealed?: number };
  terminalError?: { code: string; message: string };
  statistics?: ReplicationStatisticsJSON;
  retry?: RetryStateJSON;
  bytesShipped: number;
  /** Application-consistent points (appConsistentEvery): the last attempt, and why it failed if it did. */
  appConsistency?: { attemptedAt: number; error?: string };
}

export interface CycleResult {
  /** What the cycle did. */
  action: 'none' | 'initial' | 'delta' | 'resync' | 'export' | 'waiting';
  sequence?: number;
  bytes?: number;
  applied: number;
}

/** Continuous replication: the shortest time between the starts of two cycles. */
export const CONTINUOUS_MIN_INTERVAL_MS = 1000;
/** Continuous replication is late, for health, as a 30 s relationship would be. */
export const CONTINUOUS_HEALTH_PERIOD_MS = 30_000;

/** Time between the starts of two cycles: the policy's period, or the minimum interval of continuous mode. */
export function frequencyMs(policy: ResolvedPolicySpec): number {
  if (policy.frequency === 'continuous') return CONTINUOUS_MIN_INTERVAL_MS;
  return parseDuration(policy.frequency) ?? 300_000;
}

/** The period health judges lag and missed cycles by. */
export function healthPeriodMs(policy: ResolvedPolicySpec): number {
  return policy.frequency === 'continuous' ? CONTINUOUS_HEALTH_PERIOD_MS : frequencyMs(policy);
}

export function retentionOf(policy: ResolvedPolicySpec): CreateReplicaRequest['retention'] {
  const app = parseDuration(policy.appConsistentEvery ?? '0') ?? 0;
  return { additional: policy.recoveryPoints?.additional ?? 0, ...(app > 0 && { appConsistentEvery: app }) };
}

/** An application-consistent cut is due: the policy asks for one every N hours and the last attempt is that old. */
export function appCutDue(record: PrimaryRecord, time: number): boolean {
  const every = parseDuration(record.policy.appConsistentEvery ?? '0') ?? 0;
  return every > 0 && time - (record.appConsistency?.attemptedAt ?? Number.NEGATIVE_INFINITY) >= every;
}

/** Records how an asked-for application-consistent cut went (its error shows as health Warning until one succeeds). */
export function noteAppCut(record: PrimaryRecord, time: number, cut: { consistency?: string; quiesceError?: string }): void {
  record.appConsistency = cut.consistency === 'app' ? { attemptedAt: time } : { attemptedAt: time, error: cut.quiesceError ?? 'the guest could not be quiesced' };
}

/** Is `now` inside "HH:MM-HH:MM" (local time; the window may cross midnight)? */
export function inWindow(window: string, now: number): boolean {
  const m = /^(\d\d):(\d\d)-(\d\d):(\d\d)$/.exec(window);
  if (!m) return true;
  const d = new Date(now);
  const t = d.getHours() * 60 + d.getMinutes();
  const from = Number(m[1]) * 60 + Number(m[2]);
  const to = Number(m[3]) * 60 + Number(m[4]);
  return from <= to ? t >= from && t < to : t >= from || t < to;
}

export function newPrimaryRecord(
  req: Pick<PrimaryRecord, 'id' | 'vm' | 'replica' | 'policy' | 'excludeDisks' | 'disks' | 'replicaStoragePath' | 'forwardOf' | 'replicationGroup'>,
): PrimaryRecord {
  return {
    ...req,
    role: 'Primary',
    state: transition('Disabled', 'enable'),
    sequence: 0,
    applied: 0,
    bytesShipped: 0,
  };
}
