// Generated from schemas/protectedvm.schema.json by `npm run gen:types`. Do not edit by hand:
// test/model/types-drift.test.ts fails when this file and the schemas disagree.

import type { ApiVersion, DnsLabel, ObjectMeta } from './site.ts';

/**
 * A VM replicated from its primary site to a replica site under a policy.
 */
export interface ProtectedVM {
  apiVersion: ApiVersion;
  kind: 'ProtectedVM';
  metadata: ObjectMeta;
  spec: ProtectedVMSpec;
}

export interface ProtectedVMSpec {
  /**
   * The VM's name on the primary site.
   */
  vm: string;
  primary: DnsLabel;
  replica: DnsLabel;
  policy: DnsLabel;
  /**
   * A DNS label: lower-case letters, digits and '-', at most 63 characters, starting and ending with a letter or digit.
   */
  replicationGroup?: string;
  disks?: DiskSelection;
  failoverNetwork?: FailoverNetwork;
  extendedReplica?: ExtendedReplica;
  /**
   * Where the replica's files live; changing it moves them. @default the replica server's storage path
   */
  replicaStoragePath?: string;
}

export interface DiskSelection {
  /**
   * Disk names not replicated (page files, scratch). @default []
   */
  exclude?: string[];
}

/**
 * Hyper-V's Failover TCP/IP: static addresses the VM gets on the replica site.
 */
export interface FailoverNetwork {
  /**
   * @minItems 1
   */
  adapters: [FailoverAdapter, ...FailoverAdapter[]];
}

export interface FailoverAdapter {
  name: string;
  ipv4?: FailoverIPv4;
  ipv6?: FailoverIPv6;
}

export interface FailoverIPv4 {
  /**
   * Address with prefix length, e.g. 10.20.0.11/24.
   */
  address: string;
  gateway?: string;
  dns?: string[];
}

export interface FailoverIPv6 {
  /**
   * Address with prefix length, e.g. fd00::11/64.
   */
  address: string;
  gateway?: string;
  dns?: string[];
}

/**
 * Replica of the replica (Hyper-V extended replication).
 */
export interface ExtendedReplica {
  site: DnsLabel;
  policy: DnsLabel;
}
