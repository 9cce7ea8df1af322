// Generated from schemas/agent-api/responses.schema.json by `npm run gen:types`. Do not edit by hand:
// test/model/types-drift.test.ts fails when this file and the schemas disagree.

import type { ResolvedPolicySpec } from '../desired.ts';

export type RelationshipRole = 'Primary' | 'Replica';

export interface DiskInfo {
  id: string;
  size: number;
}

export interface RecoveryPointInfo {
  sequence: number;
  /**
   * RFC 3339 time of the cut.
   */
  time: string;
  consistency: 'crash' | 'app';
  cutId: string;
}

/**
 * What a Replica server says about its side of a relationship.
 */
export interface ReplicaStatus {
  id: string;
  vm: string;
  primary: string;
  storagePath: string;
  state: string;
  /**
   * Sequence of the latest applied (complete, consistent) point; 0 before the initial copy.
   */
  applied: number;
  /**
   * Sequences received and durable, not applied yet, per disk.
   */
  received: {
    [k: string]: number[];
  };
  points: RecoveryPointInfo[];
  disks: DiskInfo[];
  /**
   * A streamed initial copy in progress: its cut and, per disk, the segments durable so far.
   */
  initial?: {
    cutId: string;
    segments: {
      [k: string]: number;
    };
  };
}

/**
 * GetReplicationStatistics: a relationship's counters since monitoringStartTime.
 */
export interface ReplicationStatisticsView {
  state: string;
  health: string;
  lastReplicationTime?: string;
  pendingReplicationSize: number;
  averageReplicationSize: number;
  maximumReplicationSize: number;
  averageReplicationLatency: number;
  successfulReplicationCount: number;
  missedReplicationCount: number;
  replicationErrors: number;
  monitoringStartTime: string;
}

/**
 * One relationship as an agent reports it (the listRelationships and getRelationship routes).
 */
export interface RelationshipView {
  id: string;
  role: RelationshipRole;
  vm: string;
  /**
   * Peer host name: the replica for a primary, the primary for a replica.
   */
  peer: string;
  state: string;
  health: 'Normal' | 'Warning' | 'Critical';
  healthReasons: string[];
  policy?: ResolvedPolicySpec;
  disks: DiskInfo[];
  excludeDisks: string[];
  lastReplicationTime?: string;
  /**
   * Seconds since the cut of the latest point the replica holds.
   */
  lagSeconds?: number;
  pendingBytes: number;
  initialReplication?: {
    method: string;
    bytesDone: number;
    bytesTotal: number;
    startAt?: string;
  };
  resync?: {
    bytesDone: number;
    bytesTotal: number;
  };
  recoveryPoints: number;
  appliedSequence: number;
  /**
   * Primary side: sequence of the newest cut sealed into the outbox (shipped or not).
   */
  lastCutSequence?: number;
  /**
   * Bytes of sealed logs sent to the replica (primary side): what crossed the wire, before TLS.
   */
  bytesShipped?: number;
  storagePath?: string;
  /**
   * Replica side: how its images and undo lie on disk (`none` only for replicas made before encryption at rest).
   */
  atRest?: 'aes-256-xts' | 'none';
  lastError?: {
    code: string;
    message: string;
    at: string;
  };
  nextRetryAt?: string;
  /**
   * Primary side, while Suspended: who paused it (an operator's pause is never undone by drsite).
   */
  suspendedBy?: 'operator' | 'engine';
  /**
   * Replica side: the `<vm>-Test` VM of an active test failover and its point.
   */
  testFailover?: {
    vm: string;
    sequence: number;
  };
  /**
   * Replica side: the failed-over VM and the point it runs from.
   */
  failover?: {
    vm: string;
    sequence: number;
  };
  statistics: ReplicationStatisticsView;
}

/**
 * What failback-from-azure brought home.
 */
export interface FailbackFromAzureResult {
  method: 'minimize-downtime' | 'full-download';
  /**
   * Every byte downloaded (disk data and digests); diskBytes: the disks' total size.
   */
  bytesDownloaded: number;
  diskBytes: number;
  disks: {
    id: string;
    bytesDownloaded: number;
    blocksChanged: number;
    compare: 'sums' | 'data' | 'none';
  }[];
}

/**
 * The `<vm>-Test` VM a test failover started, its point and its disks' NBD socket.
 */
export interface TestFailoverResult {
  testVm: string;
  recoveryPoint: RecoveryPointInfo;
  nbdSocket: string;
}

/**
 * The VM a failover started and its point.
 */
export interface FailoverResult {
  vm: string;
  recoveryPoint: RecoveryPointInfo;
  state: string;
}

/**
 * POST prepare-planned-failover (primary host): the VM must be off; ships the final delta.
 */
export interface PrepareResult {
  /**
   * Last sequence shipped and applied on the replica: the failover point.
   */
  sequence: number;
  state: string;
}
