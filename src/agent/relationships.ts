// Creating and removing replication relationships on this host: the primary side
// (CreateReplicationRelationship), the Replica server side a primary asks for, reverse
// replication's seeding from the former primary's disks, and extended replication.
import { copyFile, mkdir, rename, rm } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { RetryableError, TerminalError } from '../model/errors.ts';
import type { VmDefinition } from '../model/hypervisor.ts';
import type { CreateRelationshipRequest, CreateReplicaRequest, RelationshipView, ReverseRequest, VmConfig } from '../transport/agent-api.ts';
import type { PeerIdentity } from '../transport/peer.ts';
import { authorizePrimary } from './authorization.ts';
import { RELATIONSHIP_ID, replicaOf, type AgentContext } from './context.ts';
import { macFor } from './hypervisor/qemu/qemu-args.ts';
import { createAtRestKey, keysFromWire, keysToWire, newRelationshipKeys, writeKeys } from './keys.ts';
import { newPrimaryRecord, retentionOf } from '../core/replication/primary-record.ts';
import { ReplicaReplication, type ReplicaRecord } from '../core/replication/replica.ts';
import { stopVm } from './vms.ts';
import { adoptDomain, releaseVm } from './adopted.ts';
import { LibvirtHypervisor } from './hypervisor/libvirt/libvirt-hypervisor.ts';
import { seedFromOriginal } from './hypervisor/libvirt/original-domain.ts';

export type CreateRelationship = CreateRelationshipRequest & { seedFromVm?: string; discardSeed?: boolean };

export async function createRelationship(ctx: AgentContext, req: CreateRelationship): Promise<RelationshipView> {
  if (!RELATIONSHIP_ID.test(req.id ?? '')) throw new TerminalError('invalid-argument', `relationship id ${JSON.stringify(req.id)} is not valid`);
  const existing = ctx.primaries.get(req.id);
  if (existing) {
    if (existing.record.vm !== req.vm || existing.record.replica.name !== req.replica.name) {
      throw new TerminalError('invalid-state', `relationship ${req.id} already exists for VM ${existing.record.vm} → ${existing.record.replica.name}`);
    }
    return existing.view(); // idempotent: the same request again changes nothing
  }
  for (const p of ctx.primaries.values()) {
    if (p.record.vm === req.vm) throw new TerminalError('invalid-state', `VM ${req.vm} is already protected by relationship ${p.id}`);
  }
  const rt = ctx.runtimes.get(req.vm);
  // On a libvirt site, a ProtectedVM names a libvirt domain drsite did not define: adopted here.
  // Its excluded disks are left out of the tracking too (a network disk can be, say).
  const adopted = !rt && ctx.hv.kind === 'libvirt' ? await adoptDomain(ctx, req.vm, req.excludeDisks ?? []) : ctx.adopted.get(req.vm);
  if (!rt && !adopted) throw new TerminalError('not-found', `VM ${req.vm} not found on ${ctx.config.name}`);
  const exclude = new Set(req.excludeDisks ?? []);
  if (adopted && !adopted.domain && exclude.size) throw new TerminalError('invalid-argument', `VM ${req.vm} is adopted: every disk it was adopted with replicates (adopt it with fewer disks instead of excludeDisks)`);
  const all = rt ? rt.vm.disks : adopted!.source.disks.map((d) => ({ name: d.id, size: d.size }));
  const disks = all.filter((d) => !exclude.has(d.name)).map((d) => ({ id: d.name, size: d.size }));
  if (!disks.length) throw new TerminalError('invalid-argument', `VM ${req.vm}: every disk is excluded`);
  const record = newPrimaryRecord({
    id: req.id,
    vm: req.vm,
    replica: req.replica,
    policy: req.policy,
    excludeDisks: [...exclude],
    disks,
    ...(req.replicaStoragePath && { replicaStoragePath: req.replicaStoragePath }),
    ...(req.replicationGroup && { replicationGroup: req.replicationGroup }),
  });
  const p = await openNewPrimary(ctx, record, {
    ...(req.replicaStoragePath && { storagePath: req.replicaStoragePath }),
    ...(req.seedFromVm && { seedFromVm: req.seedFromVm }),
    ...(req.discardSeed && { discardSeed: true }),
  });
  ctx.log.info('relationship created', { relationship: req.id, vm: req.vm, replica: req.replica.name });
  return p.view();
}

/**
 * The one way a new primary side comes to be: fresh keys, the replica created on the far side
 * with them, then the keys and record stored here and the relationship put on the schedule.
 */
async function openNewPrimary(
  ctx: AgentContext,
  record: ReturnType<typeof newPrimaryRecord>,
  replicaExtras: Pick<CreateReplicaRequest, 'storagePath' | 'seedFromVm' | 'discardSeed'>,
  forward?: ReplicaReplication,
) {
  const keys = newRelationshipKeys();
  ctx.keys.set(record.id, keys);
  const vmConfig = forward ? forward.record.vmConfig : (ctx.adopted.get(record.vm)?.vmConfig ?? vmConfigOf(await ctx.hv.find(record.vm)));
  await ctx.linkTo(record.replica).createReplica({
    id: record.id,
    vm: record.vm,
    disks: record.disks,
    keys: keysToWire(keys),
    retention: retentionOf(record.policy),
    ...replicaExtras,
    ...(vmConfig && { vmConfig }),
  });
  const dir = join(ctx.config.dataDir, 'relationships', record.id);
  await mkdir(dir, { recursive: true });
  await writeKeys(dir, keys);
  const p = ctx.addPrimary(record, keys, forward ? await forward.openForward() : ctx.adopted.get(record.vm)?.source);
  await p.save();
  return p;
}

/** What of a VM's definition a replica keeps: the machine, and the MACs the guest's network config matches. */
export function vmConfigOf(vm: VmDefinition | undefined): VmConfig | undefined {
  if (!vm) return undefined;
  const macs = Object.fromEntries(vm.adapters.map((a) => [a.name, macFor(vm.name, a)]));
  return {
    ...(vm.cpus !== undefined && { cpus: vm.cpus }),
    ...(vm.memoryMiB !== undefined && { memoryMiB: vm.memoryMiB }),
    ...(vm.boot && { boot: vm.boot }),
    ...(vm.adapters.length > 0 && { macs }),
  };
}

export async function removeRelationship(ctx: AgentContext, id: string): Promise<void> {
  const p = ctx.primaries.get(id);
  const r = ctx.replicas.get(id);
  if (!p && !r) throw new TerminalError('not-found', `no relationship ${id} on ${ctx.config.name}`);
  if (p) {
    ctx.primaries.delete(id);
    await p.remove({ replicaToo: true });
  }
  if (r) {
    ctx.replicas.delete(id);
    await r.remove();
  }
}

export async function createReplica(ctx: AgentContext, req: CreateReplicaRequest, peer: PeerIdentity): Promise<ReplicaReplication> {
  const rs = ctx.config.replicaServer;
  const decision = authorizePrimary(ctx, peer);
  if (!RELATIONSHIP_ID.test(req.id ?? '')) throw new TerminalError('invalid-argument', `relationship id ${JSON.stringify(req.id)} is not valid`);
  const existing = ctx.replicas.get(req.id);
  if (existing) {
    if (existing.record.primary !== peer.commonName) throw new TerminalError('authorization', `relationship ${req.id} belongs to another primary`);
    return existing;
  }
  const keys = keysFromWire(req.keys);
  // The storage path is the Replica server's to choose (its allowedPrimaries entry): a primary may
  // name a folder inside it, never one outside (another trust group's, the agent's own data).
  const allowedRoot = resolve(decision.storagePath ?? rs.defaultStoragePath);
  const storageRoot = req.storagePath === undefined ? allowedRoot : resolve(allowedRoot, req.storagePath);
  if (storageRoot !== allowedRoot && !storageRoot.startsWith(`${allowedRoot}${sep}`)) {
    throw new TerminalError('authorization', `${peer.commonName} may not place replicas in ${req.storagePath}: outside its storage path ${allowedRoot} on ${ctx.config.name}`);
  }
  if (req.seedFromVm) {
    // Reverse replication only: the VM must be one this host replicates to the caller.
    const own = [...ctx.primaries.values()].some((p) => p.record.vm === req.seedFromVm && p.record.replica.name === peer.commonName);
    if (!own && (await ctx.hv.find(req.seedFromVm))) {
      throw new TerminalError('authorization', `${peer.commonName} may not seed from VM ${req.seedFromVm} on ${ctx.config.name}: it is not replicated to ${peer.commonName}`);
    }
    await seedReplica(ctx, req.seedFromVm, join(storageRoot, req.id), req.disks, req.discardSeed !== true);
  }
  const dir = join(ctx.config.dataDir, 'replica-records', req.id);
  await mkdir(dir, { recursive: true });
  await writeKeys(dir, keys);
  const record: ReplicaRecord = {
    id: req.id,
    role: 'Replica',
    vm: req.vm,
    primary: peer.commonName,
    storagePath: join(storageRoot, req.id),
    ...(decision.trustGroup && { trustGroup: decision.trustGroup }),
    disks: req.disks,
    retention: req.retention,
    ...(req.vmConfig && { vmConfig: req.vmConfig }),
    state: 'ReadyForInitialReplication',
    integrityErrors: 0,
  };
  let r: ReplicaReplication;
  try {
    r = await ReplicaReplication.open(dir, record, keys, await createAtRestKey(dir), ctx.clock, ctx.log);
    await r.save();
  } catch (e) {
    // Nothing half-made stays behind: no keys or record of a replica that does not exist.
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  ctx.replicas.set(req.id, r);
  ctx.log.info('replica created', { relationship: req.id, vm: req.vm, primary: peer.commonName, storagePath: record.storagePath });
  return r;
}

/**
 * Reverse replication: the former primary's own copy of the VM becomes the replica's starting
 * image (the VM must be off), so the new primary ships only blocks that differ. Its old primary
 * relationship for the VM ends here; the VM itself now exists only as a replica.
 */
async function seedReplica(ctx: AgentContext, vmName: string, storageDir: string, disks: CreateReplicaRequest['disks'], useDisks: boolean): Promise<void> {
  // A libvirt domain drsite did not define: its images seed the replica and it stays defined, the
  // original a failback restores (hypervisor/libvirt/original-domain.ts).
  const domain = ctx.adopted.get(vmName)?.domain;
  if (domain && ctx.hv instanceof LibvirtHypervisor) {
    if ((await domain.power()) !== 'Off') throw new TerminalError('invalid-state', `VM ${vmName} is running on ${ctx.config.name}: shut it down before reverse replication`);
    for (const p of [...ctx.primaries.values()].filter((x) => x.record.vm === vmName)) {
      ctx.primaries.delete(p.id);
      await p.remove({ replicaToo: false });
    }
    await releaseVm(ctx, vmName);
    await seedFromOriginal(ctx.hv, vmName, storageDir, disks.map((d) => d.id), useDisks);
    ctx.log.info('replica seeded from the original libvirt domain, which stays defined', { vm: vmName, storage: storageDir });
    return;
  }
  const vm = await ctx.hv.find(vmName);
  if (!vm) return; // nothing to seed from: a full compare against zeroes
  if (vm.power !== 'Off') throw new TerminalError('invalid-state', `VM ${vmName} is running on ${ctx.config.name}: shut it down before reverse replication`);
  for (const p of [...ctx.primaries.values()].filter((x) => x.record.vm === vmName)) {
    ctx.primaries.delete(p.id);
    await p.remove({ replicaToo: false });
  }
  for (const r of [...ctx.replicas.values()].filter((x) => x.record.failover?.vm === vmName)) {
    ctx.replicas.delete(r.id);
    await r.remove();
  }
  await stopVm(ctx, vmName);
  await mkdir(storageDir, { recursive: true });
  for (const d of useDisks ? disks : []) {
    const disk = vm.disks.find((x) => x.name === d.id);
    if (!disk) continue;
    const from = ctx.hv.diskPath(vmName, disk);
    const to = join(storageDir, `${d.id}.img`);
    await rename(from, to).catch(async (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EXDEV') throw e;
      await copyFile(from, to);
    });
  }
  await ctx.hv.remove(vmName);
  ctx.log.info('replica seeded from the former primary VM', { vm: vmName, storage: storageDir });
}

/**
 * Extended replication: this Replica server forwards what it applies for `id` to a third site,
 * with its own policy (5 or 15 minutes: Hyper-V does not extend at 30 s).
 */
export async function extend(ctx: AgentContext, id: string, req: ReverseRequest): Promise<RelationshipView> {
  const rep = replicaOf(ctx, id);
  if (req.policy.frequency === '30s' || req.policy.frequency === 'continuous') throw new TerminalError('invalid-argument', `extended replication runs every 5m or 15m, not ${req.policy.frequency}`);
  if (rep.store.applied === 0) throw new RetryableError('busy', `replica ${id} has no complete point yet: extended replication starts after the initial replication`);
  if (rep.record.extendedBy && rep.record.extendedBy !== req.id) throw new TerminalError('invalid-state', `replica ${id} is already extended by ${rep.record.extendedBy}`);
  const existing = ctx.primaries.get(req.id);
  if (existing) return existing.view();
  const record = newPrimaryRecord({ id: req.id, vm: rep.record.vm, replica: req.replica, policy: req.policy, excludeDisks: [], disks: rep.record.disks, forwardOf: id });
  const p = await openNewPrimary(ctx, record, {}, rep);
  rep.record.extendedBy = req.id;
  await rep.save();
  if (req.start !== false) await p.startInitial();
  return p.view();
}
