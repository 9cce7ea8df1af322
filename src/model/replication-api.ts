// The data the replication service exchanges: relationship views, replica status, recovery
// points and the requests of the failover family. Plain types, shared by the engine (core), the
// agent API (transport), the agents and the site drivers; the paths and routes are transport's.
import type { ResolvedPolicySpec } from './desired.ts';
import type { VmBoot } from './hypervisor.ts';
import type { SiteSpec } from './types.generated.ts';

export interface DiskInfo {
  id: string;
  size: number;
}

export type RelationshipRole = 'Primary' | 'Replica';

/** CreateReplicationRelationship, sent by an operator to the primary host's agent. */
export interface CreateRelationshipRequest {
  /** Deterministic id chosen by the caller (the reconciler derives it from site and VM names). */
  id: string;
  vm: string;
  /**
   * The Replica server's agent (`endpoint`), or an Azure storage container (`azure`: the azure
   * Site's spec, whose credentials name environment variables of the primary's agent).
   */
  replica: { name: string; endpoint: string; azure?: SiteSpec };
  /** Defaults already applied (src/config/defaults.ts). */
  policy: ResolvedPolicySpec;
  excludeDisks?: string[];
  replicaStoragePath?: string;
  /** Multi-VM consistency: relationships of one group on this host share their cut instants. */
  replicationGroup?: string;
}

/** Sent by the primary agent to the Replica server when the relationship is created. */
export interface CreateReplicaRequest {
  id: string;
  vm: string;
  disks: DiskInfo[];
  /** Relationship keys, base64: the channel is mutual TLS; the replica needs them to verify and decrypt logs. */
  keys: { encryptionKey: string; macKey: string };
  retention: { additional: number; appConsistentEvery?: number };
  storagePath?: string;
  /**
   * Reverse replication: the Replica server seeds the replica from its own VM of this name (the
   * former primary, which must be off); its primary relationship for that VM, if any, ends.
   */
  seedFromVm?: string;
  /** With seedFromVm: discard that VM's disks instead of seeding from them (a full download). */
  discardSeed?: boolean;
  /** The VM's machine definition, kept with the replica for failover. */
  vmConfig?: VmConfig;
}

/** What a Replica server says about its side of a relationship. */
export interface ReplicaStatus {
  id: string;
  vm: string;
  primary: string;
  storagePath: string;
  state: string;
  /** Sequence of the latest applied (complete, consistent) point; 0 before the initial copy. */
  applied: number;
  /** Sequences received and durable, not applied yet, per disk. */
  received: Record<string, number[]>;
  points: RecoveryPointInfo[];
  disks: DiskInfo[];
  /** A streamed initial copy in progress: its cut and, per disk, the segments durable so far. */
  initial?: { cutId: string; segments: Record<string, number> };
}

export interface RecoveryPointInfo {
  sequence: number;
  /** RFC 3339 time of the cut. */
  time: string;
  consistency: 'crash' | 'app';
  cutId: string;
}

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

/** One relationship as an agent reports it (GET /v1/relationships). */
export interface RelationshipView {
  id: string;
  role: RelationshipRole;
  vm: string;
  /** Peer host name: the replica for a primary, the primary for a replica. */
  peer: string;
  state: string;
  health: 'Normal' | 'Warning' | 'Critical';
  healthReasons: string[];
  policy?: ResolvedPolicySpec;
  disks: DiskInfo[];
  excludeDisks: string[];
  lastReplicationTime?: string;
  /** Seconds since the cut of the latest point the replica holds. */
  lagSeconds?: number;
  pendingBytes: number;
  initialReplication?: { method: string; bytesDone: number; bytesTotal: number; startAt?: string };
  resync?: { bytesDone: number; bytesTotal: number };
  recoveryPoints: number;
  appliedSequence: number;
  /** Primary side: sequence of the newest cut sealed into the outbox (shipped or not). */
  lastCutSequence?: number;
  /** Bytes of sealed logs sent to the replica (primary side): what crossed the wire, before TLS. */
  bytesShipped?: number;
  storagePath?: string;
  /** Replica side: how its images and undo lie on disk (`none` only for replicas made before encryption at rest). */
  atRest?: 'aes-256-xts' | 'none';
  lastError?: { code: string; message: string; at: string };
  nextRetryAt?: string;
  /** Primary side, while Suspended: who paused it (an operator's pause is never undone by drsite). */
  suspendedBy?: 'operator' | 'engine';
  /** Replica side: the `<vm>-Test` VM of an active test failover and its point. */
  testFailover?: { vm: string; sequence: number };
  /** Replica side: the failed-over VM and the point it runs from. */
  failover?: { vm: string; sequence: number };
  statistics: ReplicationStatisticsView;
}

export interface CreateVmRequest {
  name: string;
  disks: { name: string; size: number }[];
  adapters?: { name: string; network?: string; mac?: string }[];
  power?: 'Running' | 'Off';
  /** A real guest's vCPUs, memory and boot (the qemu hypervisor); absent = the site's defaults. */
  cpus?: number;
  memoryMiB?: number;
  boot?: VmBootConfig;
}

export type VmBootConfig = VmBoot;

/** POST /v1/vms/adopt: a running QEMU VM drsite did not start, tracked through QEMU's dirty bitmaps. */
export interface AdoptVmRequest {
  name: string;
  /** A QMP monitor socket of the VM that drsite may use (QEMU serves one client per monitor). */
  qmpSocket: string;
  /** Each disk's name (the replicated disk id) and the block node its guest device writes through. */
  disks: { name: string; node: string }[];
}

/** What of a VM's definition travels with its replica, so a failover starts the same machine. */
export interface VmConfig {
  cpus?: number;
  memoryMiB?: number;
  boot?: VmBootConfig;
  /** The primary's adapters' fixed MACs, by adapter name (the guest's network config matches on them). */
  macs?: Record<string, string>;
  /** A libvirt domain's persistent definition (`virsh dumpxml --inactive`): a failover on a libvirt site defines its domain from it. */
  domainXml?: string;
}

/** POST /v1/vms/:name/power. Off is a graceful shutdown (ACPI power button on a real guest). */
export interface SetPowerRequest {
  power: 'Running' | 'Off';
  /** How long the guest may take to power off; absent = the site's default. */
  timeoutMs?: number;
  /** Off: stop the guest hard when it does not power off in time, instead of refusing. */
  force?: boolean;
}

/** POST failback-from-azure (primary host, VM off): bring every disk home from its page blob. */
export interface FailbackFromAzureRequest {
  /** @default minimize-downtime */
  method?: 'minimize-downtime' | 'full-download';
}

export interface FailbackFromAzureResult {
  method: 'minimize-downtime' | 'full-download';
  /** Every byte downloaded (disk data and digests) and the disks' total size. */
  bytesDownloaded: number;
  diskBytes: number;
  disks: { id: string; bytesDownloaded: number; blocksChanged: number; compare: 'sums' | 'data' | 'none' }[];
}

/** Static addressing for one adapter of a failed-over VM (Hyper-V's Failover TCP/IP). */
export interface FailoverAdapterSettings {
  name: string;
  /** Network to connect the adapter to; null or absent = disconnected. */
  network?: string | null;
  ipv4?: { address: string; gateway?: string; dns?: string[] };
  ipv6?: { address: string; gateway?: string; dns?: string[] };
}

/** Which point a failover uses: `latest`, `latest-app-consistent`, an RFC 3339 time (newest point at or before it) or a sequence. */
export type RecoveryPointSelector = 'latest' | 'latest-app-consistent' | string | number;

/** POST test-failover (replica host): a `<vm>-Test` VM on a throw-away overlay of the point. */
export interface TestFailoverRequest {
  recoveryPoint?: RecoveryPointSelector;
  /** Network for every adapter; null/absent: disconnected (Hyper-V's default for test VMs). */
  network?: string | null;
  adapters?: FailoverAdapterSettings[];
}

export interface TestFailoverResult {
  testVm: string;
  recoveryPoint: RecoveryPointInfo;
  nbdSocket: string;
}

/** POST failover (replica host): planned (after prepare-planned-failover) or unplanned. */
export interface FailoverRequest {
  recoveryPoint?: RecoveryPointSelector;
  /** Failover TCP/IP and mapped network per adapter, written into the VM's vm.json. */
  adapters?: FailoverAdapterSettings[];
  /** Start the VM after failover. @default true */
  start?: boolean;
}

export interface FailoverResult {
  vm: string;
  recoveryPoint: RecoveryPointInfo;
  state: string;
}

/** POST prepare-planned-failover (primary host): the VM must be off; ships the final delta. */
export interface PrepareResult {
  /** Last sequence shipped and applied on the replica: the failover point. */
  sequence: number;
  state: string;
}

/**
 * POST reverse (host that now runs the VM): replicate it back to the former primary, which
 * seeds the replica from its own copy of the VM's disks so only differing blocks ship.
 */
export interface ReverseRequest {
  /** Id of the new, reversed relationship. */
  id: string;
  replica: { name: string; endpoint: string };
  policy: ResolvedPolicySpec;
  /** Start the reverse initial sync now. @default true */
  start?: boolean;
  /**
   * `minimize-downtime`: the former primary's disks seed the replica, only differing blocks ship.
   * `full-download`: they are discarded and everything is copied again. @default minimize-downtime
   */
  method?: 'minimize-downtime' | 'full-download';
}
