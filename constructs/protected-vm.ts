// ProtectedVm construct: a VM replicated from its primary site to a replica site under a policy.
import type { Construct } from 'constructs';
import type { DiskSelection, FailoverNetwork, ProtectedVM as ProtectedVmDocument } from '../src/model/desired.ts';
import { DrResource, refName, type Ref, type ResourceMetaProps } from './dr-resource.ts';
import type { ReplicationPolicy } from './replication-policy.ts';
import type { Site } from './site.ts';

/** Replica of the replica (Hyper-V extended replication). */
export interface ExtendedReplicaProps {
  /** The third site. */
  readonly site: Ref<Site>;
  /** Its policy: 5m or 15m, not faster than the first hop. */
  readonly policy: Ref<ReplicationPolicy>;
}

export interface ProtectedVmProps extends ResourceMetaProps {
  /**
   * The VM's name on the primary site.
   * @default the resource name
   */
  readonly vm?: string;
  /** Where the VM runs. */
  readonly primary: Ref<Site>;
  /** Where its replica lands. */
  readonly replica: Ref<Site>;
  /** How it replicates. */
  readonly policy: Ref<ReplicationPolicy>;
  /**
   * Multi-VM consistency group (the policy must set multiVmConsistency).
   * @default none
   */
  readonly replicationGroup?: string;
  /**
   * Disks left out of replication.
   * @default { exclude: [] }
   */
  readonly disks?: DiskSelection;
  /**
   * Static addresses per adapter after failover (Hyper-V's Failover TCP/IP).
   * @default none: addresses as the target network gives them
   */
  readonly failoverNetwork?: FailoverNetwork;
  /**
   * Replicate the replica on to a third site.
   * @default none
   */
  readonly extendedReplica?: ExtendedReplicaProps;
  /**
   * Where the replica's files live.
   * @default the replica server's storage path
   */
  readonly replicaStoragePath?: string;
}

export class ProtectedVm extends DrResource<ProtectedVmDocument> {
  constructor(scope: Construct, id: string, props: ProtectedVmProps) {
    const { name, labels, annotations, vm, primary, replica, policy, extendedReplica, ...rest } = props;
    super(scope, id, 'ProtectedVM', { name, labels, annotations }, {
      vm: vm ?? name ?? id,
      primary: refName(primary),
      replica: refName(replica),
      policy: refName(policy),
      ...rest,
      extendedReplica: extendedReplica && { site: refName(extendedReplica.site), policy: refName(extendedReplica.policy) },
    });
  }
}
