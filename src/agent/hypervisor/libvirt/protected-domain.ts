// A libvirt domain drsite protects but did not create: checked (persistent, every disk trackable),
// tracked through checkpoints, quiesced through `virsh domfsfreeze`/`domfsthaw`, powered through
// virsh. Its persistent definition travels with the replica, so a failover defines the same
// machine on the recovery site.
import { join } from 'node:path';
import { quiescedSource, type CutSource, type Quiescer } from '../../../core/replication/ports.ts';
import type { PowerState } from '../../../model/hypervisor.ts';
import type { VmConfig } from '../../../model/replication-api.ts';
import { checkDomain, domState, LibvirtCheckpointSource, type DomainCheck } from './checkpoint-source.ts';
import { LibvirtQmpSource } from './qmp-source.ts';
import { shutdownDomain, type LibvirtHypervisor } from './libvirt-hypervisor.ts';

export interface ProtectedDomain {
  readonly name: string;
  readonly check: DomainCheck;
  /** Checkpoints when every disk is qcow2; QEMU's dirty bitmaps through the monitor passthrough otherwise. */
  readonly tracker: LibvirtCheckpointSource | LibvirtQmpSource;
  /** The tracking survives agent restarts (checkpoints). */
  readonly persistent: boolean;
  /** The tracker, its app-consistent cuts frozen through the guest agent. */
  readonly source: CutSource & { readonly disks: LibvirtCheckpointSource['disks']; close(): Promise<void> };
  readonly vmConfig: VmConfig;
  power(): Promise<PowerState>;
  setPower(power: PowerState, opts: { timeoutMs?: number; force?: boolean }): Promise<PowerState>;
}

/** `restarted`: the agent starting again on a domain it protected (see LibvirtQmpSource.open). */
export async function openProtectedDomain(hv: LibvirtHypervisor, name: string, onContinuityLost: (why: string) => Promise<void>, exclude: readonly string[] = [], restarted = false): Promise<ProtectedDomain> {
  hv.vmDir(name); // refuses names that are not VM names
  const check = await checkDomain(hv.virsh, name, exclude);
  const workDir = join(hv.runDir, 'protected', name);
  await hv.qemuFiles.prepareDir(workDir);
  const gid = await hv.qemuFiles.gid();
  // One tracker for all disks, so a cut is one instant across them: checkpoints need every disk
  // in qcow2; a raw one puts the whole domain on QEMU's (non-persistent) dirty bitmaps.
  const persistent = check.disks.every((d) => d.format === 'qcow2');
  const group = { ...(gid !== undefined && { qemuGroup: gid }), excluded: check.excluded };
  const tracker = persistent
    ? await LibvirtCheckpointSource.open({ virsh: hv.virsh, domain: name, workDir, ...group, onContinuityLost }, check.disks)
    : await LibvirtQmpSource.open({ virsh: hv.virsh, domain: name, workDir, ...group, onContinuityLost, disks: check.disks }, restarted);
  const inner = quiescedSource(tracker, virshQuiescer(hv, name));
  const source = { disks: tracker.disks, cut: inner.cut.bind(inner), close: () => tracker.close() };
  const macs = Object.fromEntries(check.info.interfaces.filter((i) => i.mac).map((i) => [i.name, i.mac!]));
  const vmConfig: VmConfig = { domainXml: check.inactiveXml, ...(Object.keys(macs).length && { macs }) };
  const power = async (): Promise<PowerState> => ((await domState(hv.virsh, name)) === 'shut off' ? 'Off' : 'Running');
  return {
    name,
    check,
    tracker,
    persistent,
    source,
    vmConfig,
    power,
    async setPower(p, opts) {
      if (p === 'Running') {
        if ((await power()) === 'Off') await hv.virsh.run(['start', name], { domain: name });
      } else {
        await shutdownDomain(hv.virsh, name, opts.timeoutMs ?? hv.settings.shutdownTimeoutMs ?? 60_000, opts.force ?? false);
      }
      return power();
    },
  };
}

/**
 * Freezes the guest's filesystems through libvirt (its qemu-guest-agent channel): `virsh
 * domfsfreeze`, and `domfsthaw` after the cut, also after a failed freeze.
 */
export function virshQuiescer(hv: LibvirtHypervisor, name: string): Quiescer {
  return {
    async freeze(timeoutMs) {
      try {
        await hv.virsh.run(['domfsfreeze', name], { domain: name, timeoutMs });
      } catch (e) {
        throw new Error(`VM "${name}": guest agent: ${(e as Error).message}`, { cause: e });
      }
    },
    async thaw(timeoutMs) {
      await hv.virsh.run(['domfsthaw', name], { domain: name, timeoutMs });
    },
  };
}
