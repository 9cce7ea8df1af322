// The QEMU command line of a VM, as plain data: a pure function of the VM definition, the site's
// settings and the paths the driver chose, so tests can read exactly what a guest is given.
import { createHash } from 'node:crypto';
import { TerminalError } from '../../../model/errors.ts';
import type { VmAdapter, VmDefinition } from '../../../model/hypervisor.ts';

export type Accel = 'kvm' | 'tcg';

/** Site-level settings of the qemu driver (the Site's `qemu` block). */
export interface QemuSettings {
  /** @default "qemu-system-x86_64" (looked up on PATH) */
  readonly emulator?: string;
  /** `auto`: KVM only when a probe guest actually runs under it, else TCG. @default "auto" */
  readonly accel?: Accel | 'auto';
  /** vCPUs of a VM that declares none. @default 1 */
  readonly cpus?: number;
  /** Memory of a VM that declares none. @default 256 */
  readonly memoryMiB?: number;
  /** QEMU machine type. @default "q35" */
  readonly machine?: string;
  /**
   * Network name → QEMU `-netdev` options without `id` (e.g. `user`, `socket,listen=127.0.0.1:5000`).
   * An adapter on a network missing here is refused; an adapter without a network gets a NIC with
   * no backend (disconnected).
   */
  readonly networks?: Readonly<Record<string, string>>;
  /** How long a graceful shutdown may take when the caller gives no timeout. @default 60000 */
  readonly shutdownTimeoutMs?: number;
  /** UEFI firmware image for `boot: { firmware: uefi }`. @default "/usr/share/ovmf/OVMF.fd" */
  readonly uefiFirmware?: string;
  /**
   * How long a started guest has to show it booted (serial console output or a guest agent reply)
   * before its relationships turn Warning (`guest-not-booting`); 0 turns the watch off. @default 45000
   */
  readonly bootTimeoutMs?: number;
}

export const QEMU_DEFAULTS = {
  emulator: 'qemu-system-x86_64',
  accel: 'auto',
  cpus: 1,
  memoryMiB: 256,
  machine: 'q35',
  shutdownTimeoutMs: 60_000,
  uefiFirmware: '/usr/share/ovmf/OVMF.fd',
  bootTimeoutMs: 45_000,
} as const;

/** Seconds a guest's disk I/O waits for the agent's NBD export to come back before it fails. */
export const NBD_RECONNECT_DELAY_S = 60;

/** Files of one running guest, all inside its VM folder. */
export interface GuestPaths {
  readonly qmp: string;
  readonly qga: string;
  readonly pidfile: string;
  readonly serial: string;
}

export interface LaunchInput {
  readonly vm: VmDefinition;
  readonly settings: QemuSettings;
  readonly accel: Accel;
  readonly paths: GuestPaths;
  readonly nbdSocket: string;
  readonly seedImage?: string;
}

const NETDEV_TYPES = new Set(['user', 'socket', 'stream', 'dgram', 'tap', 'bridge', 'l2tpv3', 'vde', 'vhost-user']);

/** A fixed, locally administered MAC in QEMU's 52:54:00 range, from the VM and adapter names. */
export function macFor(vm: string, adapter: VmAdapter): string {
  if (adapter.mac) return adapter.mac.toLowerCase();
  const h = createHash('sha256').update(`${vm}/${adapter.name}`).digest();
  return ['52', '54', '00', ...[...h.subarray(0, 3)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** QEMU's `key=value,...` syntax doubles commas inside a value. */
function v(s: string): string {
  return s.replace(/,/g, ',,');
}

/** Checks what only the site's settings can make wrong; every message names the VM. */
export function netdevFor(vm: string, adapter: VmAdapter, settings: QemuSettings): string | undefined {
  if (adapter.network === undefined) return undefined;
  const spec = settings.networks?.[adapter.network];
  if (spec === undefined) {
    const known = Object.keys(settings.networks ?? {});
    throw new TerminalError('invalid-argument', `VM "${vm}" adapter "${adapter.name}": network "${adapter.network}" has no QEMU netdev in the site's qemu.networks (${known.length ? `declared: ${known.join(', ')}` : 'none declared'})`);
  }
  const type = spec.split(',')[0] ?? '';
  if (!NETDEV_TYPES.has(type)) throw new TerminalError('invalid-argument', `site qemu.networks.${adapter.network}: "${spec}" does not start with a netdev type (${[...NETDEV_TYPES].join(', ')})`);
  if (/(^|,)id=/.test(spec)) throw new TerminalError('invalid-argument', `site qemu.networks.${adapter.network}: "${spec}" must not set id (the driver names netdevs)`);
  return spec;
}

export function qemuArgs(input: LaunchInput): string[] {
  const { vm, settings, paths } = input;
  const args = [
    '-name', `guest=${v(vm.name)}`,
    '-machine', settings.machine ?? QEMU_DEFAULTS.machine,
    '-accel', input.accel,
    '-smp', String(vm.cpus ?? settings.cpus ?? QEMU_DEFAULTS.cpus),
    '-m', String(vm.memoryMiB ?? settings.memoryMiB ?? QEMU_DEFAULTS.memoryMiB),
    '-nodefaults', '-no-user-config', '-display', 'none',
    // A guest that powers off leaves QEMU in the `shutdown` state instead of exiting, so the driver
    // (or, after an agent restart, the adopting one) tells a clean power-off from a crash.
    '-no-shutdown',
    // Started paused: the driver subscribes to events before the guest runs its first instruction.
    '-S',
    '-daemonize', '-pidfile', paths.pidfile,
    '-chardev', `socket,id=qmp,path=${v(paths.qmp)},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control',
    '-chardev', `file,id=serial0,path=${v(paths.serial)}`, '-serial', 'chardev:serial0',
  ];
  vm.disks.forEach((d, i) => {
    // reconnect-delay: when the agent's export goes away (an agent restart, a failover's commit
    // swapping overlays for images), the guest's I/O waits for it to come back instead of failing.
    args.push('-blockdev', JSON.stringify({ driver: 'nbd', 'node-name': `disk${i}`, server: { type: 'unix', path: input.nbdSocket }, export: d.name, 'reconnect-delay': NBD_RECONNECT_DELAY_S }));
    const boot = vm.boot && 'firmware' in vm.boot ? `,bootindex=${i + 1}` : '';
    args.push('-device', `virtio-blk-pci,drive=disk${i},serial=${v(d.name.slice(0, 20))}${boot}`);
  });
  if (input.seedImage) {
    args.push('-blockdev', JSON.stringify({ driver: 'file', 'node-name': 'seed-file', filename: input.seedImage, 'read-only': true }));
    args.push('-blockdev', JSON.stringify({ driver: 'raw', 'node-name': 'seed', file: 'seed-file', 'read-only': true }));
    args.push('-device', 'virtio-blk-pci,drive=seed,serial=cidata');
  }
  vm.adapters.forEach((a, i) => {
    const netdev = netdevFor(vm.name, a, settings);
    if (netdev !== undefined) args.push('-netdev', `${netdev},id=net${i}`);
    args.push('-device', `virtio-net-pci,mac=${macFor(vm.name, a)}${netdev !== undefined ? `,netdev=net${i}` : ''}`);
  });
  args.push(
    '-device', 'virtio-serial-pci,id=vser0',
    '-chardev', `socket,id=qga0,path=${v(paths.qga)},server=on,wait=off`,
    '-device', 'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0',
  );
  const boot = vm.boot ?? { firmware: 'bios' as const };
  if ('kernel' in boot) {
    args.push('-kernel', boot.kernel);
    if (boot.initrd) args.push('-initrd', boot.initrd);
    if (boot.append) args.push('-append', boot.append);
  } else if (boot.firmware === 'uefi') {
    args.push('-bios', settings.uefiFirmware ?? QEMU_DEFAULTS.uefiFirmware);
  }
  return args;
}
