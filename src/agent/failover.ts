// The failover family on this host: test failover on throw-away overlays, planned failover's
// primary half, failover to a point, commit, cancel, reverse replication, and failback from Azure.
// The replica engine (core/replication/replica-failover.ts) decides and records every step; this
// file is its VM plumbing on this host (overlay VMs, the original libvirt domain, committed disks).
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { TerminalError } from '../model/errors.ts';
import type { VmAdapter, VmDefinition } from '../model/hypervisor.ts';
import type {
  FailbackFromAzureRequest,
  FailbackFromAzureResult,
  FailoverAdapterSettings,
  FailoverRequest,
  FailoverResult,
  RecoveryPointSelector,
  RelationshipView,
  ReverseRequest,
  TestFailoverRequest,
  TestFailoverResult,
} from '../transport/agent-api.ts';
import { primaryOf, replicaOf, type AgentContext } from './context.ts';
import type { VmRuntime, ClosableDevice } from './hypervisor/vm-runtime.ts';
import type { ReplicaReplication } from '../core/replication/replica.ts';
import type { FailoverStarted, RecoveryVms } from '../core/replication/replica-failover.ts';
import type { RecoveryPoint } from '../core/replica/recovery-points.ts';
import { createRelationship } from './relationships.ts';
import { dropVm, serveOverlays, serveVm, setPower } from './vms.ts';
import { LibvirtHypervisor, shutdownDomain } from './hypervisor/libvirt/libvirt-hypervisor.ts';
import { findOriginal, forgetOriginal, restoreIntoOriginal, type OriginalDomain } from './hypervisor/libvirt/original-domain.ts';

function adaptersOf(req: { adapters?: FailoverAdapterSettings[]; network?: string | null }): VmAdapter[] {
  const list = req.adapters?.length ? req.adapters : [{ name: 'eth0' }];
  return list.map((a) => {
    const network = a.network === undefined ? req.network : a.network;
    return { name: a.name, ...(network ? { network } : {}), ...(a.ipv4 && { ipv4: a.ipv4 }), ...(a.ipv6 && { ipv6: a.ipv6 }) };
  });
}

/** Creates `name` on this host running on overlays of the replica's point `sequence`, the same machine as the primary's. */
async function overlayVm(ctx: AgentContext, rep: ReplicaReplication, name: string, selector: RecoveryPointSelector | undefined, kind: 'test' | 'failover', adapters: VmAdapter[], power: 'Running' | 'Off'): Promise<{ rt: VmRuntime; point: RecoveryPoint }> {
  if (await ctx.hv.find(name)) throw new TerminalError('invalid-state', `a VM named ${name} already exists on ${ctx.config.name}`);
  const dir = ctx.hv.vmDir(name);
  await mkdir(dir, { recursive: true });
  const { cpus, memoryMiB, boot, macs, domainXml } = rep.record.vmConfig ?? {};
  let devices: Map<string, ClosableDevice> | undefined;
  let rt: VmRuntime | undefined;
  try {
    const opened = await rep.openPointOverlays(selector ?? 'latest', dir);
    devices = opened.devices;
    const sequence = opened.point.sequence;
    const vm: VmDefinition = {
      name,
      disks: rep.record.disks.map((d) => ({ name: d.id, file: `${d.id}.overlay`, size: d.size })),
      adapters: adapters.map((a) => (macs?.[a.name] ? { ...a, mac: macs[a.name] } : a)),
      power: 'Off',
      ...(cpus !== undefined && { cpus }),
      ...(memoryMiB !== undefined && { memoryMiB }),
      ...(boot && { boot }),
      ...(domainXml && { domainXml }),
      origin: { relationshipId: rep.id, recoveryPoint: sequence, kind },
    };
    await ctx.hv.save(vm);
    rt = await serveOverlays(ctx, vm, devices);
    if (power === 'Running') await setPower(ctx, name, { power });
    return { rt, point: opened.point };
  } catch (e) {
    if (rt) await dropVm(ctx, name).catch(() => {});
    else if (devices) for (const d of devices.values()) await d.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/** The caller's adapters and power for a recovered VM, and for reverse replication its request. */
type VmOptions = { adapters?: FailoverAdapterSettings[]; network?: string | null; start?: boolean; reverse?: ReverseRequest };

/** This host's VM plumbing behind a replica's failover verbs. */
function hostVms(ctx: AgentContext, rep: ReplicaReplication, opts: VmOptions = {}): RecoveryVms {
  return {
    async startTest(name, selector) {
      const { rt, point } = await overlayVm(ctx, rep, name, selector, 'test', adaptersOf(opts), 'Running');
      return { point, nbdSocket: rt.socketPath };
    },
    removeTest: (vm) => dropVm(ctx, vm),
    async startFailover(selector, previous) {
      const original = ctx.hv instanceof LibvirtHypervisor ? await findOriginal(ctx.hv, rep.record.vm) : undefined;
      if (original) return failbackOntoOriginal(ctx, rep, original, selector, previous !== undefined, opts.start !== false);
      if (previous) await dropVm(ctx, previous); // change of point before commit
      const { point } = await overlayVm(ctx, rep, rep.record.vm, selector, 'failover', adaptersOf(opts), opts.start === false ? 'Off' : 'Running');
      ctx.log.info('failover', { relationship: rep.id, vm: rep.record.vm, point: point.sequence });
      return { vm: rep.record.vm, point };
    },
    async stopFailover(vm) {
      // The original libvirt domain goes off again (it stays defined, as before the failback).
      if (ctx.hv instanceof LibvirtHypervisor && (await findOriginal(ctx.hv, vm))) await shutdownDomain(ctx.hv.virsh, vm, 0, true);
      else await dropVm(ctx, vm);
    },
    ...commitOnHost(ctx),
    async replicateBack(vm) {
      const req = opts.reverse;
      if (!req) throw new TerminalError('invalid-argument', `reverse replication of ${vm} needs its request (the new relationship's id and replica)`);
      const full = req.method === 'full-download';
      await createRelationship(ctx, {
        id: req.id,
        vm,
        replica: req.replica,
        policy: { ...req.policy, initialReplication: { method: full ? 'network' : 'existing-replica', startAt: 'immediately' } },
        seedFromVm: vm,
        ...(full && { discardSeed: true }),
      });
      ctx.replicas.delete(rep.id);
    },
  };
}

/** Test failover: `<vm>-Test` from a chosen point on a throw-away overlay; replication keeps running. */
export async function testFailover(ctx: AgentContext, id: string, req: TestFailoverRequest): Promise<TestFailoverResult> {
  const rep = replicaOf(ctx, id);
  const test = await rep.testFailover(hostVms(ctx, rep, { ...req, network: req.network ?? null }), req.recoveryPoint);
  ctx.log.info('test failover', { relationship: id, vm: test.vm, point: test.point.sequence });
  return { testVm: test.vm, recoveryPoint: rep.pointInfo(test.point), nbdSocket: test.nbdSocket };
}

export async function cleanupTestFailover(ctx: AgentContext, id: string): Promise<{ removed: string[] }> {
  const rep = replicaOf(ctx, id);
  return { removed: [await rep.cleanupTestFailover(hostVms(ctx, rep))] };
}

export async function preparePlannedFailover(ctx: AgentContext, id: string): Promise<{ sequence: number; state: string }> {
  const p = primaryOf(ctx, id);
  const domain = ctx.adopted.get(p.record.vm)?.domain;
  const power = domain ? await domain.power() : (await ctx.hv.get(p.record.vm)).power;
  if (power !== 'Off') throw new TerminalError('invalid-state', `VM ${p.record.vm} is running: shut it down before a planned failover`);
  return p.preparePlannedFailover();
}

/** Failover (planned or unplanned) to a point; the same call again before commit changes the point. */
export async function failover(ctx: AgentContext, id: string, req: FailoverRequest): Promise<FailoverResult> {
  const rep = replicaOf(ctx, id);
  const started = await rep.failover(hostVms(ctx, rep, req), req.recoveryPoint);
  return { vm: started.vm, recoveryPoint: rep.pointInfo(started.point), state: rep.record.state };
}

/**
 * Failback onto the libvirt domain this site protected before (it stays defined while the VM ran
 * elsewhere): the point is written into its own images and the domain itself starts, so its
 * original definition is what runs, not a second domain. A change of point stops it first.
 */
async function failbackOntoOriginal(ctx: AgentContext, rep: ReplicaReplication, original: OriginalDomain, selector: RecoveryPointSelector | undefined, running: boolean, start: boolean): Promise<FailoverStarted> {
  const hv = ctx.hv as LibvirtHypervisor;
  if (running) await shutdownDomain(hv.virsh, original.vm, 0, true);
  const dir = join(ctx.config.dataDir, 'failback', rep.id);
  await mkdir(dir, { recursive: true });
  const opened = await rep.openPointOverlays(selector ?? 'latest', dir);
  try {
    await restoreIntoOriginal(hv, original, opened.devices, start);
  } finally {
    for (const d of opened.devices.values()) await d.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
  ctx.log.info('failback onto the original libvirt domain', { relationship: rep.id, vm: original.vm, point: opened.point.sequence });
  return { vm: original.vm, point: opened.point };
}

/**
 * Commit's half on this host. A failback onto the original libvirt domain: its own images hold the
 * point already, and the domain stops being marked as the original once the chain is gone.
 * Otherwise a running guest is paused (its I/O drained) while its disks move from overlays to
 * images, and goes on where it was: its NBD client reconnects to the same exports, now tracked.
 */
function commitOnHost(ctx: AgentContext): Pick<RecoveryVms, 'detachFromChain' | 'committed'> {
  let original = false;
  let paused = false;
  let committed: VmDefinition | undefined;
  return {
    async detachFromChain(name) {
      original = ctx.hv instanceof LibvirtHypervisor && (await findOriginal(ctx.hv, name)) !== undefined;
      if (original) return;
      const rt = ctx.runtimes.get(name);
      const vm = await ctx.hv.get(name);
      const dir = ctx.hv.vmDir(name);
      paused = rt && vm.power === 'Running' && ctx.hv.pause ? (await ctx.hv.pause(vm.name), true) : false;
      try {
        for (const d of vm.disks) {
          const dev = rt?.devices.get(d.name);
          if (!dev) throw new TerminalError('invalid-state', `failed-over VM ${name} has no running disk ${d.name}`);
          await materialize(dev, join(dir, `${d.name}.img.tmp`));
        }
      } catch (e) {
        if (paused) await ctx.hv.resume!(vm.name).catch(() => {});
        throw e;
      }
      await rt?.stop();
      for (const d of vm.disks) {
        await rename(join(dir, `${d.name}.img.tmp`), join(dir, `${d.name}.img`));
        await rm(join(dir, `${d.name}.overlay`), { force: true });
        await rm(join(dir, `${d.name}.overlay.map`), { force: true });
      }
      committed = { ...vm, disks: vm.disks.map((d) => ({ ...d, file: `${d.name}.img` })) };
      await ctx.hv.save(committed);
    },
    async committed(name) {
      if (original) return forgetOriginal(ctx.hv as LibvirtHypervisor, name);
      await serveVm(ctx, committed!);
      if (paused) await ctx.hv.resume!(committed!.name);
    },
  };
}

/** Commit: the failed-over VM gets standalone disks; the other recovery points are discarded. */
export async function commit(ctx: AgentContext, id: string): Promise<RelationshipView> {
  const rep = replicaOf(ctx, id);
  await rep.commit(hostVms(ctx, rep));
  return rep.view(ctx.clock.now());
}

/** Cancel: on the replica, the failed-over VM is discarded and replication resumes; on the primary, a prepared planned failover is undone. */
export async function cancel(ctx: AgentContext, id: string): Promise<RelationshipView> {
  const rep = ctx.replicas.get(id);
  if (!rep && !ctx.primaries.has(id)) throw new TerminalError('not-found', `no relationship ${id} on ${ctx.config.name}`);
  if (rep?.waitingFailover) {
    await rep.cancel(hostVms(ctx, rep));
    return rep.view(ctx.clock.now());
  }
  const p = ctx.primaries.get(id);
  if (p?.state === 'PreparedForPlannedFailover') {
    await p.cancelPrepared();
    return p.view();
  }
  throw new TerminalError('invalid-state', `nothing to cancel for ${id} on ${ctx.config.name}: no failover waiting for completion or prepared`);
}

/** Reverse replication from this host (which runs the failed-over VM) back to the former primary. */
export async function reverse(ctx: AgentContext, id: string, req: ReverseRequest): Promise<RelationshipView> {
  const rep = replicaOf(ctx, id);
  await rep.reverse(hostVms(ctx, rep, { reverse: req }));
  const p = primaryOf(ctx, req.id);
  if (req.start !== false) await p.startInitial();
  return p.view();
}

/**
 * Failback from Azure, first half (this host is the relationship's primary, its VM is off): each
 * disk gets what the Azure VM left in its page blob, downloading only the blocks that differ
 * (minimize-downtime) or everything (full-download). Nothing ships to Azure here: the failover
 * marker there still refuses changes until the Azure site ends the failover.
 */
export async function failbackFromAzure(ctx: AgentContext, id: string, req: FailbackFromAzureRequest): Promise<FailbackFromAzureResult> {
  const p = primaryOf(ctx, id);
  const link = ctx.linkTo(p.record.replica);
  if (!link.failback) throw new TerminalError('invalid-argument', `relationship ${id} replicates to ${p.record.replica.name}, not to Azure`);
  const vm = await ctx.hv.get(p.record.vm);
  if (vm.power !== 'Off') throw new TerminalError('invalid-state', `VM ${vm.name} is running on ${ctx.config.name}: shut it down before failing back onto its disks`);
  const method = req.method ?? 'minimize-downtime';
  const rt = ctx.runtimes.get(vm.name);
  const out: FailbackFromAzureResult = { method, bytesDownloaded: 0, diskBytes: 0, disks: [] };
  for (const d of p.source.disks) {
    const disk = vm.disks.find((x) => x.name === d.id);
    if (!disk) throw new TerminalError('not-found', `VM ${vm.name} has no disk ${d.id} any more`);
    // Through the running runtime's device when there is one, so nothing it caches goes stale.
    const target = rt?.devices.get(d.id) ?? ctx.hv.diskPath(vm.name, disk);
    const r = await link.failback(id, d.id, target, { method, keys: ctx.keys.get(id)! });
    out.bytesDownloaded += r.bytesDownloaded;
    out.diskBytes += r.diskSize;
    out.disks.push({ id: d.id, bytesDownloaded: r.bytesDownloaded, blocksChanged: r.blocksChanged, compare: r.compare });
  }
  ctx.log.info('failback from Azure downloaded', { relationship: id, vm: vm.name, method, bytes: out.bytesDownloaded, of: out.diskBytes });
  return out;
}

/**
 * Failback from Azure, second half (after the Azure site ended the failover): replication to
 * Azure starts again from this host. The disks now equal the page blobs, so the resync it runs
 * compares keyed digests with the last recovery point and ships only the blocks the Azure VM
 * changed, which also brings the blobs' digests up to date.
 */
export async function replicateToAzure(ctx: AgentContext, id: string): Promise<RelationshipView> {
  const p = primaryOf(ctx, id);
  if (!ctx.linkTo(p.record.replica).failback) throw new TerminalError('invalid-argument', `relationship ${id} replicates to ${p.record.replica.name}, not to Azure`);
  if (p.state === 'PreparedForPlannedFailover') await p.cancelPrepared();
  if (p.state === 'Critical') await p.resume();
  await p.requestResync();
  return p.view();
}

/** Writes a device's whole content as a sparse raw image (all-zero chunks are skipped). */
async function materialize(dev: ClosableDevice, path: string): Promise<void> {
  const CHUNK = 4 << 20;
  const zero = Buffer.alloc(CHUNK);
  const fh = await open(path, 'w', 0o644);
  try {
    await fh.truncate(dev.size);
    for (let at = 0; at < dev.size; at += CHUNK) {
      const buf = await dev.read(at, Math.min(CHUNK, dev.size - at));
      if (!buf.equals(zero.subarray(0, buf.length))) await fh.write(buf, 0, buf.length, at);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}
