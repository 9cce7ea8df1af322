// The VMs of this host as the agent runs them: each VM's disks served over NBD (through the
// change tracker, or a failover's overlays), and its guest started and stopped by the hypervisor
// on those exports. The order matters for a real guest: its exports come up before it starts, and
// it stops before its exports go away, so a guest never sees its disks vanish.
import { join } from 'node:path';
import { TerminalError } from '../model/errors.ts';
import type { GuestLiveness, PowerState, VmDefinition } from '../model/hypervisor.ts';
import type { SiteVm } from '../model/site.ts';
import type { CreateVmRequest, SetPowerRequest } from '../transport/agent-api.ts';
import type { AgentContext } from './context.ts';
import { buildSeedImage } from './hypervisor/qemu/seed.ts';
import { adoptedView } from './adopted.ts';
import { VmRuntime, type ClosableDevice } from './hypervisor/vm-runtime.ts';

/** Defines a VM (sparse disks of the given sizes), serves its disks and starts it when asked. */
export async function createVm(ctx: AgentContext, req: CreateVmRequest): Promise<VmDefinition> {
  const vm = await ctx.hv.create({
    name: req.name,
    disks: req.disks,
    adapters: req.adapters ?? [],
    power: 'Off',
    ...(req.cpus !== undefined && { cpus: req.cpus }),
    ...(req.memoryMiB !== undefined && { memoryMiB: req.memoryMiB }),
    ...(req.boot && { boot: req.boot }),
  });
  const rt = await VmRuntime.start(ctx.hv, vm, ctx.nbdDir, ctx.log);
  ctx.runtimes.set(vm.name, rt);
  return (req.power ?? 'Running') === 'Running' ? setPower(ctx, vm.name, { power: 'Running' }) : vm;
}

/** Serves a VM's tracked disks. Starts nothing: a real guest still running from before reconnects to them (adopt). */
export async function serveVm(ctx: AgentContext, vm: VmDefinition): Promise<VmRuntime> {
  const rt = await VmRuntime.start(ctx.hv, vm, ctx.nbdDir, ctx.log);
  ctx.runtimes.set(vm.name, rt);
  return rt;
}

/** Serves devices that are not tracked (a failover's overlays of a recovery point). */
export async function serveOverlays(ctx: AgentContext, vm: VmDefinition, devices: Map<string, ClosableDevice>): Promise<VmRuntime> {
  const rt = await VmRuntime.serve(vm, devices, ctx.nbdDir, ctx.log);
  ctx.runtimes.set(vm.name, rt);
  return rt;
}

/**
 * Brings a VM to a power state. Off asks the guest to shut down and waits (a real guest: the ACPI
 * power button, then `timeoutMs`); a guest that does not stop is refused with a clear error
 * unless `force`. Running starts it on its exports, with the failover TCP/IP seed when it has one.
 */
export async function setPower(ctx: AgentContext, name: string, req: SetPowerRequest): Promise<VmDefinition> {
  const rt = ctx.runtimes.get(name);
  const domain = ctx.adopted.get(name)?.domain;
  // A protected libvirt domain: shut down through libvirt (`virsh shutdown`; `destroy` only with force).
  if (!rt && domain) {
    const power = await domain.setPower(req.power, { ...(req.timeoutMs !== undefined && { timeoutMs: req.timeoutMs }), ...(req.force !== undefined && { force: req.force }) });
    return { name, disks: domain.check.disks.map((d) => ({ name: d.target, file: d.image, size: d.size })), adapters: [], power };
  }
  if (!rt) throw new TerminalError('not-found', `VM ${name} not found on ${ctx.config.name}`);
  const seedImage = req.power === 'Running' ? await seedFor(ctx, rt.vm) : undefined;
  const vm = await ctx.hv.setPower(name, req.power, {
    nbdSocket: rt.socketPath,
    ...(req.timeoutMs !== undefined && { timeoutMs: req.timeoutMs }),
    ...(req.force !== undefined && { force: req.force }),
    ...(seedImage && { seedImage }),
  });
  // A `files` VM has no guest: off, its disks take no more writes (the sample workload's, say),
  // so a planned failover's last cut holds everything written before the power-off.
  if (ctx.hv.kind === 'files') await rt.setWritable(vm.power === 'Running');
  Object.assign(rt.vm, { power: vm.power });
  return vm;
}

/** Stops a VM's guest hard (if it runs) and its exports, and forgets its runtime; the definition stays. */
export async function stopVm(ctx: AgentContext, name: string): Promise<void> {
  const rt = ctx.runtimes.get(name);
  if (!rt) return;
  if (ctx.hv.kind !== 'files') await ctx.hv.setPower(name, 'Off', { nbdSocket: rt.socketPath, force: true, timeoutMs: 0 });
  await rt.stop();
  ctx.runtimes.delete(name);
}

/** Stops a VM and removes it with its folder (a test failover's VM, a discarded failover). */
export async function dropVm(ctx: AgentContext, name: string): Promise<void> {
  await stopVm(ctx, name);
  if (await ctx.hv.find(name)) await ctx.hv.remove(name);
}

/** The VMs as the hypervisor sees them now: a real guest that powered off or crashed shows so. */
export async function listVms(ctx: AgentContext): Promise<SiteVm[]> {
  const out: SiteVm[] = [];
  for (const rt of ctx.runtimes.values()) out.push(await vmView(ctx, rt));
  for (const vm of ctx.adopted.values()) {
    const view = adoptedView(vm);
    out.push(vm.domain ? { ...view, power: await vm.domain.power().catch(() => view.power) } : view);
  }
  // A libvirt site: its other domains are VMs a ProtectedVM may name (adopted once protected).
  const listed = new Set(out.map((v) => v.name));
  for (const vm of (await ctx.hv.externalVms?.()) ?? []) {
    if (!listed.has(vm.name)) out.push({ name: vm.name, disks: vm.disks.map((d) => ({ name: d.name, size: d.size })), adapters: vm.adapters, power: vm.power });
  }
  return out;
}

export async function vmView(ctx: AgentContext, rt: VmRuntime): Promise<SiteVm & { detail?: string; crashed?: { at: number; message: string }; guest?: GuestLiveness }> {
  const { name, power } = rt.vm;
  // The whole definition, disk image file names included (the files hypervisor's vm.json).
  const view = { ...rt.vm, nbdSocket: rt.socketPath };
  if (ctx.hv.kind === 'files') return view;
  const s = await ctx.hv.status(name).catch((e: unknown) => ({ power, detail: `unknown (${(e as Error).message})` }) as const);
  if (s.power !== power) Object.assign(rt.vm, { power: s.power as PowerState });
  const guest = s.power === 'Running' ? ctx.hv.liveness?.(name) : undefined;
  return { ...view, power: s.power, ...(s.detail && { detail: s.detail }), ...('crashed' in s && s.crashed && { crashed: s.crashed }), ...(guest && { guest }) };
}

/**
 * The cloud-init NoCloud seed a real guest created by a failover boots with: its hostname and the
 * addresses declared for the site it now runs on. Rebuilt at each start, so it always says what
 * the VM's adapters say; a VM that is not a failover's gets none.
 */
async function seedFor(ctx: AgentContext, vm: VmDefinition): Promise<string | undefined> {
  if ((ctx.hv.kind !== 'qemu' && ctx.hv.kind !== 'libvirt') || !vm.origin) return undefined;
  const path = join(ctx.hv.vmDir(vm.name), 'seed.img');
  await buildSeedImage(path, vm, { instanceId: `${vm.name}-${vm.origin.kind}-${vm.origin.recoveryPoint}` });
  return path;
}
