// The Hypervisor port: how an agent finds, defines, starts and stops the VMs of its host. The
// agent serves every disk itself (NBD exports through the change tracker, or a failover's
// overlays), so a driver never opens disk images for a running guest: it attaches the exports.
// Drivers live in agent/hypervisor/ (`files`: folders with vm.json; `qemu`: real guests;
// `libvirt`: libvirt domains through virsh).

export type PowerState = 'Running' | 'Off';

export interface VmDisk {
  /** Stable name inside the VM (`os`, `data`); also the replicated disk id. */
  name: string;
  /** Image file name inside the VM folder. */
  file: string;
  size: number;
}

export interface VmAdapter {
  name: string;
  /** Network the adapter is connected to; absent = disconnected. */
  network?: string;
  /** A fixed MAC address (QEMU: the NIC's `mac=`); absent = the driver derives one from the VM and adapter names. */
  mac?: string;
  ipv4?: { address: string; gateway?: string; dns?: string[] };
  ipv6?: { address: string; gateway?: string; dns?: string[] };
}

/** How a real guest boots: a kernel given to the emulator (direct boot) or the firmware from its disks. */
export type VmBoot =
  | { kernel: string; initrd?: string; append?: string }
  | { firmware: 'bios' | 'uefi' };

export interface VmDefinition {
  name: string;
  disks: VmDisk[];
  adapters: VmAdapter[];
  power: PowerState;
  /** vCPUs and memory of a real guest; absent = the site's defaults. */
  cpus?: number;
  memoryMiB?: number;
  boot?: VmBoot;
  /** Set on VMs created by a failover: where they came from and from which point. */
  origin?: { relationshipId: string; recoveryPoint: number; kind: 'test' | 'failover' };
  /** A failover VM on a libvirt site: the protected domain's definition, rewritten for this site at each start. */
  domainXml?: string;
}

export interface PowerOptions {
  /** Unix socket of the agent's NBD server exporting the VM's disks (one export per disk name). */
  nbdSocket: string;
  /** Graceful shutdown: how long the guest has to power off before the request fails. */
  timeoutMs?: number;
  /** Off: stop the guest hard when it does not power off within timeoutMs (instead of failing). */
  force?: boolean;
  /** Extra read-only disk for the guest (a cloud-init NoCloud seed with the failover TCP/IP). */
  seedImage?: string;
}

/** What the driver knows of a VM's guest beyond its declared power state. */
export interface VmRuntimeStatus {
  power: PowerState;
  /** For a real guest: the emulator's own run state (`running`, `paused`, `shutdown`, ...). */
  detail?: string;
  /** Set when the guest stopped without being asked to (the emulator crashed or was killed). */
  crashed?: { at: number; message: string };
}

/**
 * Whether a running guest shows it booted: its serial console printed, or its guest agent answered.
 * A guest can run (QEMU up, vCPUs spinning) and never boot, e.g. a Linux kernel under a nested KVM
 * that cannot run it; only these signs tell the two apart.
 */
export interface GuestLiveness {
  /** `booting`: no sign yet, within the boot timeout; `alive`: a sign was seen; `not-booting`: none within it. */
  state: 'booting' | 'alive' | 'not-booting';
  /** When the driver started the guest (or attached to one already running), ms since the epoch. */
  since: number;
  /** What was seen, e.g. `serial console output`, or what was not, for how long. */
  evidence: string;
}

export interface Hypervisor {
  readonly kind: 'files' | 'qemu' | 'libvirt';
  /** Where the agent puts its NBD sockets when the emulator runs as another user (libvirt's QEMU); absent = `<dataDir>/nbd`. */
  readonly socketDir?: string;
  /** The folder holding a VM's definition and disk images; refuses names that are not VM names. */
  vmDir(name: string): string;
  diskPath(vm: string, disk: VmDisk): string;
  list(): Promise<VmDefinition[]>;
  find(name: string): Promise<VmDefinition | undefined>;
  get(name: string): Promise<VmDefinition>;
  /** Creates the VM folder, sparse disk images of the given sizes and its definition. Refuses to overwrite. */
  create(def: Omit<VmDefinition, 'disks'> & { disks: { name: string; size: number; file?: string }[] }): Promise<VmDefinition>;
  save(vm: VmDefinition): Promise<void>;
  /** Stops the guest if it runs, then removes the VM's folder. */
  remove(name: string): Promise<void>;
  /**
   * Brings the VM to `power` and records it. Running starts the guest on the agent's exports;
   * Off shuts it down gracefully (then hard with `force`). Idempotent.
   */
  setPower(name: string, power: PowerState, opts: PowerOptions): Promise<VmDefinition>;
  status(name: string): Promise<VmRuntimeStatus>;
  /** A running real guest's boot signs (undefined when it does not run, or the driver does not watch). */
  liveness?(name: string): GuestLiveness | undefined;
  /** A real guest's qemu-guest-agent channel (a unix socket): how its filesystems are frozen for an application-consistent point. */
  guestAgentSocket?(name: string): string;
  /** A real guest: stops its vCPUs with its I/O drained (QMP `stop`), so its disks can be swapped under it. */
  pause?(name: string): Promise<void>;
  /** Lets a paused guest run on. */
  resume?(name: string): Promise<void>;
  /** VMs of the host that the driver did not define and could protect (libvirt: the connection's other domains). */
  externalVms?(): Promise<VmDefinition[]>;
  /** Re-attaches to guests that kept running while the agent was down; called once at start. */
  adopt?(): Promise<void>;
  /** Releases the driver's handles; running guests keep running. */
  close?(): Promise<void>;
}
