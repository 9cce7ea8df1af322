// Generated from schemas/site.schema.json by `npm run gen:types`. Do not edit by hand:
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
