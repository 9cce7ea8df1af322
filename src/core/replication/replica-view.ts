// The replica side of a relationship as the agent API reports it: a pure function of the record
// and its store (points retained, statistics); a committed replica has no chain left to report.
import type { RelationshipView } from '../../model/replication-api.ts';
import type { ReplicaStore } from '../replica/replica-store.ts';
import type { ReplicaRecord } from './replica.ts';

/** Health is Warning for an hour after a rejected log (it names the last one), Normal otherwise. */
export function replicaView(record: ReplicaRecord, store: ReplicaStore, now: number): RelationshipView {
  const pts = record.committed ? [] : store.points();
  const latest = pts.at(-1);
  const stats = store.stats();
  const health = record.integrityErrors > 0 && record.lastIntegrityError && now - record.lastIntegrityError.at < 3_600_000 ? 'Warning' : 'Normal';
  return {
    id: record.id,
    role: 'Replica',
    vm: record.vm,
    peer: record.primary,
    state: record.state,
    health,
    healthReasons: health === 'Warning' ? [`log rejected: ${record.lastIntegrityError!.message}`] : [],
    disks: record.disks,
    excludeDisks: [],
    ...(latest && { lastReplicationTime: new Date(latest.time).toISOString(), lagSeconds: Math.max(0, Math.round((now - latest.time) / 1000)) }),
    pendingBytes: 0,
    recoveryPoints: pts.length,
    appliedSequence: record.committed ? 0 : store.applied,
    storagePath: record.storagePath,
    atRest: store.atRest,
    ...(record.testFailover && { testFailover: record.testFailover }),
    ...(record.failover && { failover: record.failover }),
    statistics: {
      state: record.state,
      health,
      ...(latest && { lastReplicationTime: new Date(latest.time).toISOString() }),
      pendingReplicationSize: 0,
      averageReplicationSize: stats.pointsApplied ? Math.round(stats.bytesApplied / stats.pointsApplied) : 0,
      maximumReplicationSize: 0,
      averageReplicationLatency: 0,
      successfulReplicationCount: stats.pointsApplied,
      missedReplicationCount: 0,
      replicationErrors: record.integrityErrors,
      monitoringStartTime: new Date(now).toISOString(),
    },
  };
}
