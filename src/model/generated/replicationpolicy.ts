// Generated from schemas/replicationpolicy.schema.json by `npm run gen:types`. Do not edit by hand:
// test/model/types-drift.test.ts fails when this file and the schemas disagree.

import type { ApiVersion, ObjectMeta } from './site.ts';

/**
 * An RFC 3339 time such as 2026-11-23T22:00:00Z.
 */
export type DateTime = string;

/**
 * How often and how a protected VM replicates, and which recovery points are kept.
 */
export interface ReplicationPolicy {
  apiVersion: ApiVersion;
  kind: 'ReplicationPolicy';
  metadata: ObjectMeta;
  spec: ReplicationPolicySpec;
}

export interface ReplicationPolicySpec {
  /**
   * Replication frequency, as Hyper-V Replica offers it (30s, 5m, 15m), or continuous: a new point as soon as the previous one is acknowledged, at most one a second (and within the bandwidth cap), so the lag follows the write rate. @default 5m
   */
  frequency?: '30s' | '5m' | '15m' | 'continuous';
  recoveryPoints?: RecoveryPointRetention;
  /**
   * Take an application-consistent point every 1h-12h; 0 = crash-consistent only. @default 0
   */
  appConsistentEvery?: string;
  /**
   * @default true
   */
  compression?: boolean;
  /**
   * @default aes-256-gcm
   */
  encryption?: 'aes-256-gcm';
  initialReplication?: InitialReplication;
  resync?: ResyncSettings;
  /**
   * VMs of one replication group share cut instants. @default false
   */
  multiVmConsistency?: boolean;
  /**
   * Cap in bytes per second; unset = unlimited.
   */
  bandwidth?: number;
}

/**
 * Either a number of additional hourly points, or a retention duration.
 */
export interface RecoveryPointRetention {
  /**
   * Hourly recovery points kept besides the latest. @default 0
   */
  additional?: number;
  /**
   * How long points are kept, 1h to 24h.
   */
  retention?: string;
}

export interface InitialReplication {
  /**
   * @default network
   */
  method?: 'network' | 'external-media' | 'existing-replica';
  /**
   * immediately, or an RFC 3339 time. @default immediately
   */
  startAt?: 'immediately' | DateTime;
  /**
   * Folder for external-media export and import.
   */
  mediaPath?: string;
}

export interface ResyncSettings {
  /**
   * Resynchronise when pending changes exceed this share of the disk. @default 50
   */
  thresholdPercent?: number;
  /**
   * Local time window for automatic resync, may cross midnight. @default 22:00-06:00
   */
  window?: string;
  /**
   * @default true
   */
  automatic?: boolean;
}
