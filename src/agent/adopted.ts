// VMs this agent did not start (the role of Site Recovery's Mobility service, VMware CBT): a QEMU
// VM adopted by its QMP socket and the block nodes of its disks. Their changes come from QEMU's
// own dirty bitmaps (hypervisor/qemu/dirty-bitmap-tracker.ts); the agent serves no export for
// them and never starts or stops them. Each is recorded in `<dataDir>/adopted/<name>.json` and
// adopted again when the agent starts. Bitmaps are not persistent and the new ones say nothing of
// writes made while no agent watched, so a relationship on a re-adopted VM resynchronises.
// On a libvirt site, a libvirt domain is adopted by name when a relationship asks for it
// (hypervisor/libvirt/protected-domain.ts): its checkpoints are persistent, so it does not.
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readJsonIfExists, writeJsonAtomic } from '../core/atomic-file.ts';
import { TerminalError } from '../model/errors.ts';
import type { SiteVm } from '../model/site.ts';
import type { AdoptVmRequest } from '../transport/agent-api.ts';
import type { AgentContext } from './context.ts';
import type { CutSource } from '../core/replication/ports.ts';
import type { VmConfig } from '../model/replication-api.ts';
import { QemuDirtyBitmapSource } from './hypervisor/qemu/dirty-bitmap-tracker.ts';
import { LibvirtHypervisor } from './hypervisor/libvirt/libvirt-hypervisor.ts';
import { openProtectedDomain, type ProtectedDomain } from './hypervisor/libvirt/protected-domain.ts';

export interface AdoptedVm {
  readonly name: string;
  readonly qmpSocket?: string;
  readonly disks: readonly { readonly name: string; readonly node: string }[];
  readonly source: CutSource & { readonly disks: readonly { readonly id: string; readonly size: number }[]; close(): Promise<void> };
  /** Its change tracking survives agent restarts (libvirt checkpoints). */
  readonly persistent?: boolean;
  /** The machine definition that travels with its replica. */
  readonly vmConfig?: VmConfig;
  /** A libvirt domain (powered and tracked through libvirt). */
  readonly domain?: ProtectedDomain;
  /** A libvirt domain's disks left out (not tracked). */
  readonly exclude?: readonly string[];
}

/** How an adopted VM's writes are tracked, as its view says. */
export function trackingOf(vm: AdoptedVm): string {
  return vm.domain ? vm.domain.tracker.tracking : 'QEMU dirty bitmaps (not persistent): a QEMU or agent restart makes the relationship resynchronise';
}

interface AdoptedRecord {
  readonly name: string;
  readonly qmpSocket?: string;
  readonly disks?: AdoptVmRequest['disks'];
  readonly libvirt?: true;
  readonly exclude?: readonly string[];
}

const dirOf = (ctx: AgentContext) => join(ctx.config.dataDir, 'adopted');

async function open(ctx: AgentContext, req: AdoptedRecord, restarted = false): Promise<AdoptedVm> {
  const onContinuityLost = async (why: string) => {
    for (const p of ctx.primaries.values()) if (p.record.vm === req.name) await p.markContinuityLost(why);
  };
  if (req.libvirt) {
    if (!(ctx.hv instanceof LibvirtHypervisor)) throw new TerminalError('invalid-state', `VM ${req.name} was a libvirt domain, but ${ctx.config.name} no longer runs the libvirt hypervisor`);
    const exclude = req.exclude ?? [];
    const domain = await openProtectedDomain(ctx.hv, req.name, onContinuityLost, exclude, restarted);
    return { name: req.name, disks: domain.check.disks.map((d) => ({ name: d.target, node: d.target })), source: domain.source, persistent: domain.persistent, vmConfig: domain.vmConfig, domain, exclude };
  }
  if (!req.qmpSocket || !req.disks) throw new TerminalError('invalid-argument', `adopted VM record ${req.name} names no QMP socket`);
  const qmpSocket = req.qmpSocket;
  const disks = req.disks;
  const source = await QemuDirtyBitmapSource.adopt({
    qmpSocket,
    disks: disks.map((d) => ({ id: d.name, node: d.node })),
    workDir: join(dirOf(ctx), `${req.name}.work`),
    // The relationship on it (if any) resynchronises; without one there is nothing to lose.
    onContinuityLost,
  });
  return { name: req.name, qmpSocket, disks, source };
}

/**
 * A libvirt site: the libvirt domain `name` (which drsite did not define) is checked and tracked
 * from now on, and recorded so the next agent goes on from its checkpoints.
 */
export async function adoptDomain(ctx: AgentContext, name: string, exclude: readonly string[] = []): Promise<AdoptedVm> {
  const known = ctx.adopted.get(name);
  const same = (a: readonly string[] = []) => a.length === exclude.length && a.every((x) => exclude.includes(x));
  if (known && same(known.exclude)) return known;
  // Adopted before with other disks left out (and no relationship on it now): tracked anew.
  if (known) await releaseVm(ctx, name);
  const vm = await open(ctx, { name, libvirt: true, exclude });
  await writeJsonAtomic(join(dirOf(ctx), `${name}.json`), { name, libvirt: true, ...(exclude.length && { exclude }) } satisfies AdoptedRecord);
  ctx.adopted.set(name, vm);
  ctx.log.info('libvirt domain adopted', { vm: name, disks: vm.disks.map((d) => d.name).join(','), tracking: trackingOf(vm) });
  return vm;
}

/** Adopts a running QEMU VM: its dirty bitmaps are added (one transaction across its disks) and it is recorded. */
export async function adoptVm(ctx: AgentContext, req: AdoptVmRequest): Promise<SiteVm> {
  ctx.hv.vmDir(req.name); // refuses names that are not VM names
  if (ctx.adopted.has(req.name) || ctx.runtimes.has(req.name) || (await ctx.hv.find(req.name))) {
    throw new TerminalError('invalid-state', `a VM named ${req.name} already exists on ${ctx.config.name}`);
  }
  const vm = await open(ctx, req);
  await writeJsonAtomic(join(dirOf(ctx), `${req.name}.json`), { name: req.name, qmpSocket: req.qmpSocket, disks: req.disks });
  ctx.adopted.set(req.name, vm);
  ctx.log.info('VM adopted', { vm: req.name, qmp: req.qmpSocket, disks: req.disks.map((d) => `${d.name}=${d.node}`).join(',') });
  return adoptedView(vm);
}

/** At agent start: every recorded VM adopted again (a VM whose QEMU is gone is reported and skipped). */
export async function readoptAll(ctx: AgentContext): Promise<void> {
  for (const f of (await readdir(dirOf(ctx)).catch(() => [] as string[])).filter((n) => n.endsWith('.json'))) {
    const rec = await readJsonIfExists<AdoptedRecord>(join(dirOf(ctx), f));
    if (!rec) continue;
    try {
      ctx.adopted.set(rec.name, await open(ctx, rec, true));
    } catch (e) {
      ctx.log.warn(rec.libvirt ? 'libvirt domain not adopted again' : 'adopted VM not adopted again: its QEMU does not answer', { vm: rec.name, qmp: rec.qmpSocket, error: (e as Error).message });
    }
  }
}

/** Stops tracking an adopted VM (its QEMU runs on; drsite forgets it). */
export async function releaseVm(ctx: AgentContext, name: string): Promise<void> {
  const vm = ctx.adopted.get(name);
  ctx.adopted.delete(name);
  await (vm?.domain ? vm.domain.tracker.forget() : vm?.source.close())?.catch(() => {});
  await rm(join(dirOf(ctx), `${name}.json`), { force: true });
  await rm(join(dirOf(ctx), `${name}.work`), { recursive: true, force: true });
}

export function adoptedView(vm: AdoptedVm): SiteVm & { tracking: string } {
  const adapters = vm.domain ? vm.domain.check.info.interfaces.map((i) => ({ name: i.name, ...(i.network && { network: i.network }) })) : [];
  return { name: vm.name, disks: vm.source.disks.map((d) => ({ name: d.id, size: d.size })), adapters, power: 'Running', tracking: trackingOf(vm) };
}
