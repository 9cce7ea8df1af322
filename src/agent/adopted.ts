// VMs this agent did not start (the role of Site Recovery's Mobility service, VMware CBT): a QEMU
// VM adopted by its QMP socket and the block nodes of its disks. Their changes come from QEMU's
// own dirty bitmaps (hypervisor/qemu/dirty-bitmap-tracker.ts); the agent serves no export for
// them and never starts or stops them. Each is recorded in `<dataDir>/adopted/<name>.json` and
// adopted again when the agent starts. Bitmaps are not persistent and the new ones say nothing of
// writes made while no agent watched, so a relationship on a re-adopted VM resynchronises.
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readJsonIfExists, writeJsonAtomic } from '../core/atomic-file.ts';
import { TerminalError } from '../model/errors.ts';
import type { SiteVm } from '../model/site.ts';
import type { AdoptVmRequest } from '../transport/agent-api.ts';
import type { AgentContext } from './context.ts';
import { QemuDirtyBitmapSource } from './hypervisor/qemu/dirty-bitmap-tracker.ts';

export interface AdoptedVm {
  readonly name: string;
  readonly qmpSocket: string;
  readonly disks: readonly { readonly name: string; readonly node: string }[];
  readonly source: QemuDirtyBitmapSource;
}

const dirOf = (ctx: AgentContext) => join(ctx.config.dataDir, 'adopted');

async function open(ctx: AgentContext, req: AdoptVmRequest): Promise<AdoptedVm> {
  const source = await QemuDirtyBitmapSource.adopt({
    qmpSocket: req.qmpSocket,
    disks: req.disks.map((d) => ({ id: d.name, node: d.node })),
    workDir: join(dirOf(ctx), `${req.name}.work`),
    // The relationship on it (if any) resynchronises; without one there is nothing to lose.
    onContinuityLost: async (why) => {
      for (const p of ctx.primaries.values()) if (p.record.vm === req.name) await p.markContinuityLost(why);
    },
  });
  return { name: req.name, qmpSocket: req.qmpSocket, disks: req.disks, source };
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
    const rec = await readJsonIfExists<AdoptVmRequest>(join(dirOf(ctx), f));
    if (!rec) continue;
    try {
      ctx.adopted.set(rec.name, await open(ctx, rec));
    } catch (e) {
      ctx.log.warn('adopted VM not adopted again: its QEMU does not answer', { vm: rec.name, qmp: rec.qmpSocket, error: (e as Error).message });
    }
  }
}

/** Stops tracking an adopted VM (its QEMU runs on; drsite forgets it). */
export async function releaseVm(ctx: AgentContext, name: string): Promise<void> {
  const vm = ctx.adopted.get(name);
  ctx.adopted.delete(name);
  await vm?.source.close().catch(() => {});
  await rm(join(dirOf(ctx), `${name}.json`), { force: true });
  await rm(join(dirOf(ctx), `${name}.work`), { recursive: true, force: true });
}

export function adoptedView(vm: AdoptedVm): SiteVm {
  return { name: vm.name, disks: vm.source.disks.map((d) => ({ name: d.id, size: d.size })), adapters: [], power: 'Running' };
}
