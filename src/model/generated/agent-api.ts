// Generated from schemas/agent-api/requests.schema.json by `npm run gen:types`. Do not edit by hand:
// test/model/types-drift.test.ts fails when this file and the schemas disagree.

import type { ResolvedPolicySpec } from '../desired.ts';
import type { VmBoot } from '../hypervisor.ts';
import type { SiteSpec } from './site.ts';

/**
 * A VM name as the hypervisors accept it: one plain path component (no `/`, no leading dot, no NUL). A primary names the replica's VM, which a failover later creates on this host.
 */
export type VmName = string;

/**
 * A replica disk id names its image file (`<id>.img`): the replica store's rule, checked before the handler so a refused request leaves no record behind.
 */
export type ReplicaDiskId = string;

/**
 * Which point a failover uses: `latest`, `latest-app-consistent`, an RFC 3339 time (newest point at or before it) or a sequence.
 */
export type RecoveryPointSelector = string | number;

/**
 * A policy arrives with its defaults applied by the config layer (src/config/defaults.ts), which validated it against schemas/replicationpolicy.schema.json; here only what the agent reads first is required.
 */
export type RelationshipPolicy = ResolvedPolicySpec;

/**
 * How a real guest boots: a kernel (and initrd, command line), or firmware.
 */
export type VmBootConfig = VmBoot;

export interface FailoverAddress {
  address: string;
  gateway?: string;
  dns?: string[];
}

/**
 * Static addressing for one adapter of a failed-over VM (Hyper-V's Failover TCP/IP).
 */
export interface FailoverAdapterSettings {
  name: string;
  /**
   * Network to connect the adapter to; null or absent = disconnected.
   */
  network?: string | null;
  ipv4?: FailoverAddress;
  ipv6?: FailoverAddress;
}

/**
 * What of a VM's definition travels with its replica, so a failover starts the same machine.
 */
export interface VmConfig {
  cpus?: number;
  memoryMiB?: number;
  boot?: VmBootConfig;
  /**
   * The primary's adapters' fixed MACs, by adapter name (the guest's network config matches on them).
   */
  macs?: {
    [k: string]: string | undefined;
  };
  /**
   * A libvirt domain's persistent definition (`virsh dumpxml --inactive`): a failover on a libvirt site defines its domain from it.
   */
  domainXml?: string;
}

/**
 * The Replica server's agent (`endpoint`), or an Azure storage container (`azure`; its `endpoint` is empty).
 */
export interface ReplicaRef {
  name: string;
  endpoint: string;
  /**
   * The azure Site's spec, whose credentials name environment variables of the primary's agent.
   */
  azure?: SiteSpec;
}

export interface ReplicaRetention {
  additional: number;
  appConsistentEvery?: number;
}

/**
 * POST reverse (host that now runs the VM; extend takes the same body): replicate it back to the former primary, which seeds the replica from its own copy of the VM's disks so only differing blocks ship.
 */
export interface ReverseRequest {
  /**
   * Id of the new, reversed relationship.
   */
  id: string;
  replica: ReplicaRef;
  policy: RelationshipPolicy;
  /**
   * Start the reverse initial sync now. @default true
   */
  start?: boolean;
  /**
   * `minimize-downtime`: the former primary's disks seed the replica, only differing blocks ship. `full-download`: they are discarded and everything is copied again. @default minimize-downtime
   */
  method?: 'minimize-downtime' | 'full-download';
}

/**
 * POST vms: a VM of the files hypervisor, or a real guest of the qemu one.
 */
export interface CreateVmRequest {
  name: string;
  /**
   * @minItems 1
   */
  disks: {
    name: string;
    size: number;
  }[];
  adapters?: {
    name: string;
    network?: string;
    mac?: string;
  }[];
  power?: 'Running' | 'Off';
  /**
   * A real guest's vCPUs (the qemu hypervisor); absent = the site's default.
   */
  cpus?: number;
  memoryMiB?: number;
  boot?: VmBootConfig;
}

/**
 * POST vms/adopt: a running QEMU VM drsite did not start, tracked through QEMU's dirty bitmaps.
 */
export interface AdoptVmRequest {
  name: string;
  /**
   * A QMP monitor socket of the VM that drsite may use (QEMU serves one client per monitor).
   */
  qmpSocket: string;
  /**
   * Each disk's name (the replicated disk id) and the block node its guest device writes through.
   *
   * @minItems 1
   */
  disks: {
    name: string;
    node: string;
  }[];
}

/**
 * POST vms/:name/power. Off is a graceful shutdown (ACPI power button on a real guest).
 */
export interface SetPowerRequest {
  power: 'Running' | 'Off';
  /**
   * How long the guest may take to power off; absent = the site's default.
   */
  timeoutMs?: number;
  /**
   * Off: stop the guest hard when it does not power off in time, instead of refusing.
   */
  force?: boolean;
}

/**
 * CreateReplicationRelationship, sent by an operator to the primary host's agent.
 */
export interface CreateRelationshipRequest {
  /**
   * Deterministic id chosen by the caller (the reconciler derives it from site and VM names).
   */
  id: string;
  vm: string;
  replica: ReplicaRef;
  policy: RelationshipPolicy;
  excludeDisks?: string[];
  replicaStoragePath?: string;
  /**
   * Multi-VM consistency: relationships of one group on this host share their cut instants.
   */
  replicationGroup?: string;
}

/**
 * PUT settings (ModifyReplicationSettings): the policy the relationship follows from now on.
 */
export interface ModifySettingsRequest {
  policy: RelationshipPolicy;
}

/**
 * POST import (replica host): seed the replica from an external-media export.
 */
export interface ImportMediaRequest {
  /**
   * The media's folder; the relationship's export is its subfolder of the relationship's id.
   */
  folder: string;
}

/**
 * POST test-failover (replica host): a `<vm>-Test` VM on a throw-away overlay of the point.
 */
export interface TestFailoverRequest {
  recoveryPoint?: RecoveryPointSelector;
  /**
   * Network for every adapter; null/absent: disconnected (Hyper-V's default for test VMs).
   */
  network?: string | null;
  adapters?: FailoverAdapterSettings[];
  /**
   * The job id: an azure site writes that failover's Terraform to `azure/<job>/`.
   */
  job?: string;
}

/**
 * POST failover (replica host): planned (after prepare-planned-failover) or unplanned.
 */
export interface FailoverRequest {
  recoveryPoint?: RecoveryPointSelector;
  /**
   * Failover TCP/IP and mapped network per adapter, written into the VM's vm.json.
   */
  adapters?: FailoverAdapterSettings[];
  /**
   * Start the VM after failover. @default true
   */
  start?: boolean;
  kind?: 'planned' | 'unplanned';
  /**
   * The job id: an azure site writes that failover's Terraform to `azure/<job>/`.
   */
  job?: string;
}

/**
 * POST failback-from-azure (primary host, VM off): bring every disk home from its page blob.
 */
export interface FailbackFromAzureRequest {
  /**
   * @default minimize-downtime
   */
  method?: 'minimize-downtime' | 'full-download';
}

/**
 * POST move-storage (replica host): move the replica's images and logs.
 */
export interface MoveStorageRequest {
  /**
   * The replica's new storage folder (absolute).
   */
  path: string;
}

/**
 * Sent by the primary agent to the Replica server when the relationship is created. `seedFromVm` (reverse replication): the Replica server seeds the replica from its own VM of this name (the former primary, which must be off); its primary relationship for that VM, if any, ends.
 */
export interface CreateReplicaRequest {
  id: string;
  vm: VmName;
  /**
   * @minItems 1
   */
  disks: {
    id: ReplicaDiskId;
    size: number;
  }[];
  /**
   * Relationship keys, base64: the channel is mutual TLS; the replica needs them to verify and decrypt logs.
   */
  keys: {
    encryptionKey: string;
    macKey: string;
  };
  retention: ReplicaRetention;
  storagePath?: string;
  seedFromVm?: VmName;
  /**
   * With seedFromVm: discard that VM's disks instead of seeding from them (a full download).
   */
  discardSeed?: boolean;
  vmConfig?: VmConfig;
}

/**
 * POST a disk's checksums: the multi-level compare (core/replication/block-checksums.ts), short keyed digests of these blocks.
 */
export interface ReplicaCompareRequest {
  blockSize: number;
  runs?: number[];
}

/**
 * PUT replica settings: the recovery points the replica keeps.
 */
export interface ReplicaSettingsRequest {
  retention: ReplicaRetention;
}

/** Every definition of agent-api/requests.schema.json by its name: a schema's name names its type. */
export interface AgentApiRequests {
  VmName: VmName;
  ReplicaDiskId: ReplicaDiskId;
  FailoverAddress: FailoverAddress;
  FailoverAdapterSettings: FailoverAdapterSettings;
  RecoveryPointSelector: RecoveryPointSelector;
  RelationshipPolicy: RelationshipPolicy;
  VmBootConfig: VmBootConfig;
  VmConfig: VmConfig;
  ReplicaRef: ReplicaRef;
  ReplicaRetention: ReplicaRetention;
  ReverseRequest: ReverseRequest;
  CreateVmRequest: CreateVmRequest;
  AdoptVmRequest: AdoptVmRequest;
  SetPowerRequest: SetPowerRequest;
  CreateRelationshipRequest: CreateRelationshipRequest;
  ModifySettingsRequest: ModifySettingsRequest;
  ImportMediaRequest: ImportMediaRequest;
  TestFailoverRequest: TestFailoverRequest;
  FailoverRequest: FailoverRequest;
  FailbackFromAzureRequest: FailbackFromAzureRequest;
  MoveStorageRequest: MoveStorageRequest;
  CreateReplicaRequest: CreateReplicaRequest;
  ReplicaCompareRequest: ReplicaCompareRequest;
  ReplicaSettingsRequest: ReplicaSettingsRequest;
}
