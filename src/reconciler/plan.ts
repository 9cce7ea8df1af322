// The pure planner: (desired, observed) -> typed actions with reasons, in a deterministic,
// dependency-respecting order. No I/O and no clock: the only "now" is observed.observedAt.
//
// Order: (1) removals of relationships no longer declared, by name; (2) per declared ProtectedVM,
// by name, its protection actions in a fixed rank (enable, change-policy, start-initial, resume,
// resync, disk set, storage, extended replication); (3) recovery-plan failovers, by plan name,
// groups in declared order (plan-failover.ts). Every index is a Map, so a pass is O(n log n).
import type { DesiredState, ProtectedVM, ResolvedPolicySpec, ResolvedReplicationPolicy } from '../model/desired.ts';
import type { AppliedPolicy, ObservedRelationship, ObservedState } from '../model/observed.ts';
import { lookup } from '../model/observed.ts';
import { TerminalError } from '../model/errors.ts';
import { canonicalJson } from '../vault/canonical-json.ts';
import { PlanBuilder } from './plan-builder.ts';
import { planFailovers } from './plan-failover.ts';
import type { Plan, PlanWarning, PolicyFieldChange, Target } from './plan-types.ts';
import { inGroup } from '../core/replication/replication-state.ts';

export type * from './plan-types.ts';

export function plan(desired: DesiredState, observed: ObservedState): Plan {
  const now = Date.parse(observed.observedAt);
  if (Number.isNaN(now)) {
    throw new TerminalError('invalid-argument', `observed.observedAt must be an RFC 3339 time, got ${JSON.stringify(observed.observedAt)}`);
  }
  const b = new PlanBuilder();
  const ctx: Ctx = {
    b,
    observed,
    now,
    policies: new Map(desired.policies.map((p) => [p.metadata.name, p])),
    disableByVm: new Map(),
    protectionIds: new Map(),
  };
  const declared = new Map(desired.protectedVms.map((p) => [p.metadata.name, p]));

  for (const name of Object.keys(observed.relationships).sort()) {
    if (!declared.has(name)) planRemoval(ctx, observed.relationships[name]);
  }
  for (const pvm of [...desired.protectedVms].sort(byName)) planProtection(ctx, pvm);
  planFailovers(b, desired, observed, declared, ctx.protectionIds);
  return b.build();
}

interface Ctx {
  b: PlanBuilder;
  observed: ObservedState;
  now: number;
  policies: Map<string, ResolvedReplicationPolicy>;
  /** `${site}/${vm}` -> id of a disable-protection planned for that VM, so a re-enable waits for it. */
  disableByVm: Map<string, string>;
  /** ProtectedVM name -> ids of its protection actions (recovery-plan actions wait for them). */
  protectionIds: Map<string, string[]>;
}

const byName = (a: { metadata: { name: string } }, b: { metadata: { name: string } }): number =>
  a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;

const vmTarget = (name: string): Target => ({ kind: 'ProtectedVM', name });

const isActive = (rel: ObservedRelationship | undefined): rel is ObservedRelationship =>
  rel !== undefined && rel.exists && rel.state !== 'Disabled';

function reachable(ctx: Ctx, site: string): boolean {
  return lookup(ctx.observed.sites, site)?.reachable === true;
}

/** The VM's disks on a site, or undefined when that site's inventory is unknown; null: VM absent. */
function vmDisks(ctx: Ctx, site: string, vm: string): string[] | null | undefined {
  const vms = lookup(ctx.observed.sites, site)?.vms;
  if (vms === undefined) return undefined;
  return lookup(vms, vm)?.disks ?? null;
}

function planRemoval(ctx: Ctx, rel: ObservedRelationship): void {
  if (!isActive(rel)) return;
  const target = vmTarget(rel.name);
  // Only what drsite created may be removed: a relationship someone set up by hand is drift, and
  // drift never earns a destructive action.
  if (!rel.managed) {
    ctx.b.warn('unmanaged-relationship', target, `replication of VM ${rel.vm} (${rel.primary} -> ${rel.replica}) exists but was never declared; drsite leaves it alone`);
    return;
  }
  const id = ctx.b.add('disable-protection', target, `ProtectedVM ${rel.name} is no longer declared: remove its replication ${rel.primary} -> ${rel.replica}`, true, {
    vm: rel.vm, primary: rel.primary, replica: rel.replica, cause: 'undeclared', testVms: [...rel.testVms],
  });
  ctx.disableByVm.set(`${rel.primary}/${rel.vm}`, id);
}

function planProtection(ctx: Ctx, pvm: ProtectedVM): void {
  const { b } = ctx;
  const name = pvm.metadata.name;
  const spec = pvm.spec;
  const target = vmTarget(name);
  const policy = ctx.policies.get(spec.policy);
  if (!policy) {
    b.warn('unknown-policy', target, `policy ${spec.policy} is not declared; nothing planned for ${name}`);
    return;
  }
  const ids: string[] = [];
  ctx.protectionIds.set(name, ids);
  const rel = lookup(ctx.observed.relationships, name);

  if (!isActive(rel)) {
    const blocked = enableBlocked(ctx, pvm);
    if (blocked) {
      b.warn(blocked.code, blocked.target, blocked.message);
      return;
    }
    planEnable(ctx, pvm, policy, ids, ctx.disableByVm.get(`${spec.primary}/${spec.vm}`), 'declared but not protected');
    return;
  }

  if (rel.vm !== spec.vm || rel.primary !== spec.primary || rel.replica !== spec.replica) {
    const was = `${rel.vm} ${rel.primary} -> ${rel.replica}`;
    const now = `${spec.vm} ${spec.primary} -> ${spec.replica}`;
    if (inGroup(rel.state, 'failover')) {
      b.warn('failover-state', target, `declaration changed (${was} to ${now}) but the relationship is ${rel.state}: replacement waits until the failover is resolved`);
      return;
    }
    if (!rel.managed) {
      b.warn('unmanaged-relationship', target, `a replication named ${name} (${was}) exists that drsite did not create; it does not match the declaration (${now}) and is left alone`);
      return;
    }
    const blocked = enableBlocked(ctx, pvm);
    if (blocked) {
      b.warn(blocked.code, blocked.target, blocked.message);
      return;
    }
    // A changed VM or site pair cannot be edited in place (Hyper-V neither): replace it. This is
    // an explicit declaration change, so the destructive removal is planned, and flagged.
    const disableId = b.add('disable-protection', target, `VM or sites changed (${was} to ${now}): the replication must be replaced`, true, {
      vm: rel.vm, primary: rel.primary, replica: rel.replica, cause: 'replaced', testVms: [...rel.testVms],
    }, [], '#replaced');
    ids.push(disableId);
    planEnable(ctx, pvm, policy, ids, disableId, `replaces ${was}`);
    return;
  }

  if (inGroup(rel.state, 'failover')) {
    const next = rel.state === 'FailedOver'
      ? `declare a recovery plan failover of type failback to return to ${rel.primary}`
      : rel.state === 'FailoverWaitingCompletion'
        ? 'declare a recovery plan failover of type commit or cancel'
        : `the planned failover to ${rel.replica} is in progress`;
    b.warn('failover-state', target, `relationship is ${rel.state}; protection changes wait: ${next}`);
    return;
  }
  if (rel.state === 'Critical') {
    b.warn('critical', target, `relationship is Critical (a non-recoverable error): an operator must act (e.g. drsite resync ${name}); nothing else is planned for it`);
    return;
  }
  if (rel.health === 'Critical') {
    b.warn('critical', target, `health is Critical: an operator must act`);
  }
  const reversed = rel.direction.primary !== rel.primary;
  if (reversed) {
    b.warn('reversed-direction', target, `replicating ${rel.direction.primary} -> ${rel.direction.replica} after a failover; disk, storage and extended-replica changes wait for a failback`);
  }
  if (!reachable(ctx, rel.direction.primary) || !reachable(ctx, rel.direction.replica)) {
    const down = [rel.direction.primary, rel.direction.replica].filter((s) => !reachable(ctx, s));
    b.warn('site-unreachable', target, `site ${down.join(', ')} unreachable: changes for ${name} are deferred to a later pass`);
    return;
  }

  const policyIds: string[] = [];
  // How the first copy is made matters only until it is made: a reverse or failback creates its
  // relationship with existing-replica, and the declared method is not a change to apply then.
  const copied = rel.state !== 'ReadyForInitialReplication' && rel.state !== 'InitialReplicationInProgress';
  const settled = copied ? SETTLED_AFTER_INITIAL : [];
  const changes = diffPolicy(rel.appliedPolicy, policy, settled);
  if (changes) {
    policyIds.push(b.add('change-policy', target, describePolicyChange(rel.appliedPolicy, policy, changes, 'replica'), false, {
      hop: 'replica', from: rel.appliedPolicy?.name, to: policy.metadata.name, changes,
    }));
  }
  const ext = spec.extendedReplica;
  const obsExt = rel.extendedReplica;
  if (!reversed && ext && obsExt && obsExt.site === ext.site) {
    const extPolicy = ctx.policies.get(ext.policy);
    const extChanges = extPolicy && diffPolicy(obsExt.policy, extPolicy, settled);
    if (extPolicy && extChanges) {
      policyIds.push(b.add('change-policy', target, describePolicyChange(obsExt.policy, extPolicy, extChanges, 'extended'), false, {
        hop: 'extended', from: obsExt.policy.name, to: ext.policy, changes: extChanges,
      }, [], '#extended'));
    }
  }
  ids.push(...policyIds);

  let startId: string | undefined;
  if (rel.state === 'ReadyForInitialReplication') {
    startId = addStartInitial(ctx, name, policy.spec, policyIds, 'protection enabled, initial replication not started');
    ids.push(startId);
  } else if (rel.state === 'Suspended') {
    // The declaration has no "paused" flag, so a pause is not drift from it: an operator who ran
    // Suspend (drsite suspend) decided something the declaration cannot say, and auto-resuming would
    // silently undo it. Only a suspension the engine made itself (e.g. while it recovered from an
    // error or moved storage) is resumed.
    if (rel.suspendedBy === 'engine') {
      ids.push(b.add('resume', target, 'suspended by the engine, which has recovered: resume replication', false, { suspendedBy: 'engine' }, policyIds));
    } else {
      b.warn('suspended-by-operator', target, `replication was suspended by an operator; it stays suspended until \`drsite resume ${name}\``);
    }
  } else if (rel.state === 'ResynchronizationRequired') {
    const resync = policy.spec.resync;
    if (resync.automatic) {
      const window = resync.window;
      ids.push(b.add('resync', target, `resynchronization required and policy ${policy.metadata.name} resynchronizes automatically (window ${window})`, false, {
        window, thresholdPercent: resync.thresholdPercent,
      }, policyIds));
    } else {
      b.warn('resync-required', target, `resynchronization required; policy ${policy.metadata.name} has automatic resync off: run \`drsite resync ${name}\``);
    }
  }

  if (!reversed) planDisks(ctx, pvm, rel, ids);
  if (!reversed && spec.replicaStoragePath !== undefined && spec.replicaStoragePath !== rel.replicaStoragePath) {
    ids.push(b.add('move-replica-storage', target, `replica storage path changed from ${rel.replicaStoragePath ?? '(default)'} to ${spec.replicaStoragePath}`, false, {
      site: rel.replica, from: rel.replicaStoragePath, to: spec.replicaStoragePath,
    }));
  }
  if (!reversed) planExtended(ctx, pvm, rel, ids, [...policyIds, ...(startId ? [startId] : [])]);
}

/** Why protection cannot be enabled now, or null. Checked before anything (even a replacement's removal) is planned. */
function enableBlocked(ctx: Ctx, pvm: ProtectedVM): PlanWarning | null {
  const spec = pvm.spec;
  const name = pvm.metadata.name;
  const target = vmTarget(name);
  const down = [spec.primary, spec.replica].filter((s) => !reachable(ctx, s));
  if (down.length > 0) {
    return { code: 'site-unreachable', target, message: `site ${down.join(', ')} unreachable: enabling protection of ${name} is deferred to a later pass` };
  }
  if (vmDisks(ctx, spec.primary, spec.vm) === null) {
    return { code: 'vm-not-found', target, message: `VM ${spec.vm} not found on site ${spec.primary}: protection of ${name} cannot be enabled` };
  }
  return null;
}

function planEnable(ctx: Ctx, pvm: ProtectedVM, policy: ResolvedReplicationPolicy, ids: string[], after: string | undefined, why: string): void {
  const { b } = ctx;
  const spec = pvm.spec;
  const name = pvm.metadata.name;
  const target = vmTarget(name);
  const disks = vmDisks(ctx, spec.primary, spec.vm) ?? undefined;
  const exclude = new Set(spec.disks?.exclude ?? []);
  const enableId = b.add('enable-protection', target, `${why}: replicate VM ${spec.vm} from ${spec.primary} to ${spec.replica} with policy ${policy.metadata.name}`, false, {
    vm: spec.vm,
    primary: spec.primary,
    replica: spec.replica,
    policy: policy.metadata.name,
    ...(disks !== undefined && { disks: disks.filter((d) => !exclude.has(d)).sort() }),
    ...(spec.replicaStoragePath !== undefined && { replicaStoragePath: spec.replicaStoragePath }),
    ...(spec.replicationGroup !== undefined && { replicationGroup: spec.replicationGroup }),
  }, after ? [after] : []);
  ids.push(enableId);
  const startId = addStartInitial(ctx, name, policy.spec, [enableId], 'follows enable-protection');
  ids.push(startId);
  if (spec.extendedReplica) {
    ids.push(b.add('extend-replication', target, `extended replica declared on ${spec.extendedReplica.site}: extend once initial replication completes`, false, {
      from: spec.replica, site: spec.extendedReplica.site, policy: spec.extendedReplica.policy,
    }, [startId]));
  }
}

function addStartInitial(ctx: Ctx, name: string, policy: ResolvedPolicySpec, after: string[], why: string): string {
  const ir = policy.initialReplication;
  const startAt = ir.startAt;
  const later = startAt !== 'immediately' && Date.parse(startAt) > ctx.now;
  const method = ir.method;
  return ctx.b.add('start-initial-replication', vmTarget(name), later ? `${why}; scheduled by the policy for ${startAt}` : `${why}: start now (${method})`, false, {
    method,
    startAt,
    ...(later && { notBefore: startAt }),
    ...(ir.mediaPath !== undefined && { mediaPath: ir.mediaPath }),
  }, after);
}

function planDisks(ctx: Ctx, pvm: ProtectedVM, rel: ObservedRelationship, ids: string[]): void {
  const target = vmTarget(pvm.metadata.name);
  const onVm = vmDisks(ctx, rel.primary, rel.vm);
  if (onVm === undefined) return; // inventory unknown: nothing can be compared
  if (onVm === null) {
    ctx.b.warn('vm-not-found', target, `VM ${rel.vm} is no longer on site ${rel.primary}; its replication is left as is`);
    return;
  }
  const exclude = new Set(pvm.spec.disks?.exclude ?? []);
  const present = new Set(onVm);
  const replicated = new Set(rel.disks);
  const added = onVm.filter((d) => !exclude.has(d) && !replicated.has(d)).sort();
  // Only an explicit exclude removes a disk (its replica copy is deleted: destructive). A disk that
  // vanished from the VM is drift and is only reported.
  const removed = rel.disks.filter((d) => exclude.has(d)).sort();
  const missing = rel.disks.filter((d) => !exclude.has(d) && !present.has(d)).sort();
  if (missing.length > 0) {
    ctx.b.warn('disk-missing', target, `replicated disk(s) ${missing.join(', ')} no longer on VM ${rel.vm}; left in the replica`);
  }
  if (added.length === 0 && removed.length === 0) return;
  const parts = [
    ...(added.length > 0 ? [`add ${added.join(', ')} (not excluded)`] : []),
    ...(removed.length > 0 ? [`remove ${removed.join(', ')} (now excluded)`] : []),
  ];
  ids.push(ctx.b.add('change-disk-set', target, `replicated disks differ from the declaration: ${parts.join('; ')}`, removed.length > 0, { added, removed }));
}

function planExtended(ctx: Ctx, pvm: ProtectedVM, rel: ObservedRelationship, ids: string[], after: string[]): void {
  const { b } = ctx;
  const target = vmTarget(pvm.metadata.name);
  const ext = pvm.spec.extendedReplica;
  const obs = rel.extendedReplica;
  let removeId: string | undefined;
  if (obs && (!ext || ext.site !== obs.site)) {
    const why = ext ? `extended replica moves from ${obs.site} to ${ext.site}` : 'extended replica no longer declared';
    removeId = b.add('remove-extended-replication', target, `${why}: remove extended replication ${rel.replica} -> ${obs.site}`, true, {
      site: obs.site, policy: obs.policy.name,
    });
    ids.push(removeId);
  }
  if (ext && (!obs || ext.site !== obs.site)) {
    ids.push(b.add('extend-replication', target, `extended replica declared on ${ext.site} with policy ${ext.policy}`, false, {
      from: rel.replica, site: ext.site, policy: ext.policy,
    }, [...after, ...(removeId ? [removeId] : [])]));
  }
}

/** Policy fields that only shape the initial copy: once it is done they are not compared. */
const SETTLED_AFTER_INITIAL: readonly string[] = ['initialReplication'];

/**
 * Field-level differences between the applied and the declared policy; null when none (same name
 * too). `ignore` names fields that no longer matter for this relationship (a field dropped from
 * the declaration still counts: removing a bandwidth cap is a change).
 */
export function diffPolicy(applied: AppliedPolicy | undefined, desired: ResolvedReplicationPolicy, ignore: readonly string[] = []): PolicyFieldChange[] | null {
  const from = (applied?.spec ?? {}) as Record<string, unknown>;
  const to = desired.spec as Record<string, unknown>;
  const changes: PolicyFieldChange[] = [];
  for (const field of [...new Set([...Object.keys(from), ...Object.keys(to)])].sort()) {
    if (ignore.includes(field)) continue;
    const a = from[field] === undefined ? undefined : canonicalJson(from[field], `policy.${field}`);
    const z = to[field] === undefined ? undefined : canonicalJson(to[field], `policy.${field}`);
    if (a !== z) changes.push({ field, ...(a !== undefined && { from: a }), ...(z !== undefined && { to: z }) });
  }
  if (changes.length === 0 && applied?.name === desired.metadata.name) return null;
  return changes;
}

function describePolicyChange(applied: AppliedPolicy | undefined, desired: ResolvedReplicationPolicy, changes: PolicyFieldChange[], hop: 'replica' | 'extended'): string {
  const where = hop === 'extended' ? 'extended replica' : 'replication';
  if (!applied) return `${where} runs with an unknown policy: apply ${desired.metadata.name}`;
  const fields = changes.map((c) => c.field).join(', ');
  if (applied.name !== desired.metadata.name) {
    return `${where} policy changed from ${applied.name} to ${desired.metadata.name}${fields ? ` (${fields})` : ''}`;
  }
  return `policy ${desired.metadata.name} changed: ${fields}`;
}
