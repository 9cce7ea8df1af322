// ReplicationPolicy construct: how often a VM replicates and which recovery points are kept.
import type { Construct } from 'constructs';
import type {
  InitialReplication, RecoveryPointRetention, ReplicationPolicy as ReplicationPolicyDocument, ResyncSettings,
} from '../src/model/desired.ts';
import { DrResource, type ResourceMetaProps } from './dr-resource.ts';

export interface ReplicationPolicyProps extends ResourceMetaProps {
  /**
   * Replication frequency, as Hyper-V Replica offers it (Site Recovery accepts 30s and 5m only).
   * @default '5m'
   */
  readonly frequency?: '30s' | '5m' | '15m' | 'continuous';
  /**
   * Hourly recovery points kept besides the latest (`additional`, 0-24), or a retention (`1h`-`24h`).
   * @default { additional: 0 }
   */
  readonly recoveryPoints?: RecoveryPointRetention;
  /**
   * Take an application-consistent point every 1h-12h; '0' = crash-consistent only.
   * @default '0'
   */
  readonly appConsistentEvery?: string;
  /**
   * Compress replicated data.
   * @default true
   */
  readonly compression?: boolean;
  /**
   * Encryption in transit and at rest on the replica.
   * @default 'aes-256-gcm'
   */
  readonly encryption?: 'aes-256-gcm';
  /**
   * How and when the initial copy is made.
   * @default { method: 'network', startAt: 'immediately' }
   */
  readonly initialReplication?: InitialReplication;
  /**
   * When a resynchronisation runs.
   * @default { thresholdPercent: 50, window: '22:00-06:00', automatic: true }
   */
  readonly resync?: ResyncSettings;
  /**
   * VMs of one replication group share cut instants.
   * @default false
   */
  readonly multiVmConsistency?: boolean;
  /**
   * Bandwidth cap in bytes per second.
   * @default unlimited
   */
  readonly bandwidth?: number;
}

export class ReplicationPolicy extends DrResource<ReplicationPolicyDocument> {
  constructor(scope: Construct, id: string, props: ReplicationPolicyProps = {}) {
    const { name, labels, annotations, ...spec } = props;
    super(scope, id, 'ReplicationPolicy', { name, labels, annotations }, spec);
  }
}
