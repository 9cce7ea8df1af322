// The primary side of a relationship as the agent API reports it (Measure-VMReplication's fields,
// health with its reasons): a pure function of the record, the statistics and the retry state.
import { assessHealth, type HealthReason } from './health.ts';
import type { RetryState } from './retry.ts';
import type { ReplicationStatistics } from './statistics.ts';
import type { RelationshipView } from '../../model/replication-api.ts';
import type { PrimaryRecord } from './primary-record.ts';

export interface PrimaryViewInput {
  record: PrimaryRecord;
  now: number;
  frequencyMs: number;
  diskBytes: number;
  /** Bytes the trackers hold that no cut has taken yet. */
  pending: number;
  stats: ReplicationStatistics;
  retry: RetryState;
}

export function primaryView(v: PrimaryViewInput): RelationshipView {
const { record: r, now, pending, stats: statistics, retry } = v;
  statistics.setPending(pending);
  const stats = statistics.toJSON();
  const { health, reasons } = assessHealth({
    state: r.state,
    now,
    frequencyMs: v.frequencyMs,
    ...(r.lastReplicationTime !== undefined && { lastReplicationTime: r.lastReplicationTime }),
    ...(r.replicatingSince !== undefined && { replicatingSince: r.replicatingSince }),
    successfulCycles: stats.successfulReplicationCount,
    missedCycles: stats.missedReplicationCount,
    ...(retry.status === 'retrying' && { retrying: { attempts: retry.attempts, lastError: retry.lastError?.message } }),
    ...(r.terminalError && { terminalError: r.terminalError }),
    pendingBytes: pending,
    diskBytes: v.diskBytes,
    thresholdPercent: r.policy.resync.thresholdPercent,
    ...(r.appConsistency?.error && { appConsistencyError: r.appConsistency.error }),
  });
  statistics.setHealth(health);
  const last = retry.lastError;
  return {
    id: r.id,
    role: 'Primary',
    vm: r.vm,
    peer: r.replica.name,
    state: r.state,
    health,
    healthReasons: reasons.map((x: HealthReason) => x.message),
    policy: r.policy,
    disks: r.disks,
    excludeDisks: r.excludeDisks,
    ...(r.lastReplicationTime !== undefined && {
      lastReplicationTime: new Date(r.lastReplicationTime).toISOString(),
      lagSeconds: Math.max(0, Math.round((now - r.lastReplicationTime) / 1000)),
    }),
    pendingBytes: pending,
    ...(r.initial && {
      initialReplication: {
        method: r.initial.method,
        bytesDone: Math.round(r.initial.bytesDone),
        bytesTotal: r.initial.bytesTotal,
        ...(r.initial.startAt && { startAt: new Date(r.initial.startAt).toISOString() }),
      },
    }),
    ...(r.resync && r.resync.bytesTotal > 0 && { resync: { bytesDone: r.resync.bytesDone, bytesTotal: r.resync.bytesTotal } }),
    recoveryPoints: 0,
    appliedSequence: r.applied,
    lastCutSequence: r.sequence,
    ...(r.state === 'Suspended' && r.suspendedBy && { suspendedBy: r.suspendedBy }),
    bytesShipped: r.bytesShipped,
    ...(r.replicaStoragePath && { storagePath: r.replicaStoragePath }),
    ...(last && { lastError: { code: last.code ?? 'unknown', message: last.message, at: new Date(last.at).toISOString() } }),
    ...(retry.nextAttemptAt !== undefined && { nextRetryAt: new Date(retry.nextAttemptAt).toISOString() }),
    statistics: {
      state: r.state,
      health,
      ...(stats.lastReplicationTime !== null && { lastReplicationTime: new Date(stats.lastReplicationTime).toISOString() }),
      pendingReplicationSize: pending,
      averageReplicationSize: stats.averageReplicationSize,
      maximumReplicationSize: stats.maximumReplicationSize,
      averageReplicationLatency: stats.averageReplicationLatency,
      successfulReplicationCount: stats.successfulReplicationCount,
      missedReplicationCount: stats.missedReplicationCount,
      replicationErrors: stats.replicationErrors,
      monitoringStartTime: new Date(stats.monitoringStartTime).toISOString(),
    },
  };
}
