// Generated from schemas/*.schema.json by `npm run gen:types`. Do not edit by hand:
// test/model/types-drift.test.ts fails when this file and the schemas disagree.

export type ApiVersion = 'drsite.dev/v1';

/**
 * A DNS label: lower-case letters, digits and '-', at most 63 characters, starting and ending with a letter or digit.
 */
export type DnsLabel = string;

export type SiteSpec = {
  /**
   * host: a hypervisor host running the drsite agent; azure: an Azure storage account (replica only).
   */
  type: 'host' | 'azure';
  /**
   * https URL of the site's agent. Omitted: embedded, run inside the drsite process with data under .drsite/sites/<name>.
   */
  endpoint?: string;
  /**
   * How VMs are found and started: files (folders, nothing boots), qemu (guests drsite starts), libvirt (existing libvirt domains, through virsh). @default files
   */
  hypervisor?: 'files' | 'qemu' | 'libvirt';
  qemu?: QemuSiteSettings;
  libvirt?: LibvirtSiteSettings;
  /**
   * Where the embedded agent keeps VMs and replicas. @default .drsite/sites/<name>
   */
  dataPath?: string;
  replicaServer?: ReplicaServer;
  storageAccount?: string;
  container?: string;
  credentials?: AzureCredentials;
  resourceGroup?: string;
  location?: string;
  network?: AzureNetwork;
};

/**
 * The NAME of an environment variable holding the value, never the value itself.
 */
export type EnvVarName = string;

/**
 * Where VMs run and/or replicas land: a host with an agent, or an Azure storage account.
 */
export interface Site {
  apiVersion: ApiVersion;
  kind: 'Site';
  metadata: ObjectMeta;
  spec: SiteSpec;
}

export interface ObjectMeta {
  name: DnsLabel;
  labels?: {
    [k: string]: string | undefined;
  };
  annotations?: {
    [k: string]: string | undefined;
  };
}

/**
 * Settings of the qemu hypervisor (hypervisor: qemu): the emulator, defaults for VMs that declare none, and how the site's networks map to QEMU netdevs.
 */
export interface QemuSiteSettings {
  /**
   * Path or command name of the emulator. @default qemu-system-x86_64
   */
  emulator?: string;
  /**
   * auto: KVM when a probe guest runs under it, else TCG. @default auto
   */
  accel?: 'kvm' | 'tcg' | 'auto';
  /**
   * vCPUs of a VM that declares none. @default 1
   */
  cpus?: number;
  /**
   * Memory of a VM that declares none. @default 256
   */
  memoryMiB?: number;
  /**
   * QEMU machine type. @default q35
   */
  machine?: string;
  /**
   * Network name -> QEMU -netdev options without id, e.g. user or socket,listen=127.0.0.1:5000. A failed-over adapter on a network missing here is refused.
   */
  networks?: {
    [k: string]: string | undefined;
  };
  /**
   * How long a guest may take to power off after the ACPI power button (planned failover, power off). @default 60s
   */
  shutdownTimeout?: string;
  /**
   * UEFI firmware for VMs that boot with firmware uefi. @default /usr/share/ovmf/OVMF.fd
   */
  uefiFirmware?: string;
  /**
   * How long a started guest has to show it booted (serial console output or a guest agent reply) before its relationship turns Warning with reason guest-not-booting; 0 turns the check off. @default 45s
   */
  bootTimeout?: string;
}

/**
 * Settings of the libvirt hypervisor (hypervisor: libvirt): the connection, and where the agent puts what the domains' QEMU must reach. Site network names are libvirt network names.
 */
export interface LibvirtSiteSettings {
  /**
   * libvirt connection URI. @default qemu:///system
   */
  uri?: string;
  /**
   * Folder for the NBD sockets, backup scratch files, seed disks and consoles that libvirt's QEMU processes open; made group-owned by qemuGroup. @default /var/lib/libvirt/drsite/<hash of the agent's data folder>
   */
  runDir?: string;
  /**
   * Prefix of the names of the libvirt domains this site defines (failover and test failover VMs: <domainPrefix><vm>); set it when two sites share one libvirtd. @default empty
   */
  domainPrefix?: string;
  /**
   * Group libvirt runs QEMU as (qemu.conf `group`). @default libvirt-qemu, else qemu, else kvm (the first that exists)
   */
  qemuGroup?: string;
  /**
   * How long a domain may take to shut down after virsh shutdown (planned failover, power off). @default 60s
   */
  shutdownTimeout?: string;
  /**
   * How long a domain this site starts (a failover's or test failover's) has to print on its file serial console before its relationship turns Warning with reason guest-not-booting; 0 turns the check off. A domain whose definition has no file serial console is not watched. @default 45s
   */
  bootTimeout?: string;
}

/**
 * Hyper-V's 'Enable this computer as a Replica server'.
 */
export interface ReplicaServer {
  enabled: boolean;
  /**
   * @default certificate
   */
  authentication?: 'certificate';
  /**
   * @default 8443
   */
  port?: number;
  defaultStoragePath?: string;
  allowedPrimaries?: AllowedPrimary[];
}

export interface AllowedPrimary {
  /**
   * Glob on the client certificate's name, e.g. *.contoso.com.
   */
  server: string;
  storagePath?: string;
  trustGroup?: string;
}

/**
 * Names of environment variables holding the secrets; never the secrets.
 */
export interface AzureCredentials {
  connectionStringEnv?: EnvVarName;
  accountKeyEnv?: EnvVarName;
  sasTokenEnv?: EnvVarName;
  blobEndpointEnv?: EnvVarName;
}

export interface AzureNetwork {
  virtualNetwork: string;
  subnet?: string;
}

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

/**
 * Which network a failed-over VM joins on the target site.
 */
export interface NetworkMapping {
  apiVersion: ApiVersion;
  kind: 'NetworkMapping';
  metadata: ObjectMeta;
  spec: NetworkMappingSpec;
}

export interface NetworkMappingSpec {
  source: SiteNetwork;
  target: SiteNetwork;
  /**
   * Network for test failover VMs on the target site. @default none: test VMs get no network
   */
  testNetwork?: string;
}

export interface SiteNetwork {
  site: DnsLabel;
  network: string;
}

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

export type RecoveryAction = Action & Action1 & Action & Action1;

export type Action =
  | {
      [k: string]: unknown | undefined;
    }
  | {
      [k: string]: unknown | undefined;
    };

/**
 * Ordered groups of protected VMs failed over together, with actions between groups.
 */
export interface RecoveryPlan {
  apiVersion: ApiVersion;
  kind: 'RecoveryPlan';
  metadata: ObjectMeta;
  spec: RecoveryPlanSpec;
}

export interface RecoveryPlanSpec {
  /**
   * @minItems 1
   */
  groups: [RecoveryGroup, ...RecoveryGroup[]];
  failover?: FailoverRequest;
}

export interface RecoveryGroup {
  name?: string;
  /**
   * ProtectedVM names, failed over in parallel.
   *
   * @minItems 1
   */
  vms: [DnsLabel, ...DnsLabel[]];
  before?: RecoveryAction[];
  after?: RecoveryAction[];
}

export interface Action1 {
  name?: string;
  /**
   * Run only for these failover types. @default all
   */
  failoverTypes?: ('test' | 'planned' | 'unplanned' | 'failback')[];
  script?: ScriptAction;
  manual?: ManualAction;
}

export interface ScriptAction {
  path: string;
  args?: string[];
  /**
   * @default 5m
   */
  timeout?: string;
  env?: {
    [k: string]: string | undefined;
  };
}

export interface ManualAction {
  message: string;
}

/**
 * The declarative action: a new id runs it once; the same id again is a no-op.
 */
export interface FailoverRequest {
  id: string;
  type: 'test' | 'planned' | 'unplanned' | 'failback' | 'commit' | 'cancel';
  /**
   * latest, latest-app-consistent, or an RFC 3339 time (the newest point at or before it). @default latest
   */
  recoveryPoint?: ('latest' | 'latest-app-consistent') | DateTime;
  /**
   * Commit right after the failover (no cancel afterwards). @default false
   */
  commit?: boolean;
  /**
   * With type test: remove the <vm>-Test VMs of the previous test failover. @default false
   */
  cleanupTest?: boolean;
  /**
   * @default minimize-downtime
   */
  failbackMethod?: 'minimize-downtime' | 'full-download';
  /**
   * Planned failover and failback: stop a guest hard when it does not power off within its site's shutdown timeout, instead of failing the step. @default false
   */
  forceShutdown?: boolean;
}
