// Expands a recovery plan's declarative failover request into per-VM actions, groups in declared
// order. Only a NEW failover.id does this (the same id again is a no-op); state that merely looks
// failed over never triggers anything here, so drift cannot cause a failover, commit or cancel.
//
// All or nothing: when any VM of the plan does not meet the request's precondition (or a previous
// action still runs), the whole request is refused with warnings and nothing is planned for it, so
// group ordering is never half-honoured. The level-triggered loop reports it again every pass until
// the state or the declaration changes.
import type { DesiredState, FailoverRequest, ProtectedVM, RecoveryPlan } from '../model/desired.ts';
import type { ObservedRelationship, ObservedState } from '../model/observed.ts';
import { lookup } from '../model/observed.ts';
import type { PlanBuilder } from './plan-builder.ts';
import type { ActionDetails, FailoverActionType, FailoverOrigin, Target } from './plan-types.ts';
import { inGroup } from '../core/replication/replication-state.ts';

/** One planned step for one VM, before ids and dependencies are assigned. */
type Step = {
  [K in FailoverActionType]: { type: K; reason: string; details: Omit<ActionDetails[K], keyof FailoverOrigin> };
}[FailoverActionType];

/** Test failover and its cleanup leave production alone; every other failover action does not. */
const NON_DESTRUCTIVE: ReadonlySet<FailoverActionType> = new Set(['test-failover', 'cleanup-test-failover']);

interface Env {
  observed: ObservedState;
  /** Sites of type azure: they hold replicas only, so nothing replicates back from them. */
  azure: ReadonlySet<string>;
  /** `${source}\0${target}` -> test network of the first NetworkMapping (by name) that has one. */
  testNetworks: Map<string, string>;
}

export function planFailovers(
  b: PlanBuilder,
  desired: DesiredState,
  observed: ObservedState,
  declared: ReadonlyMap<string, ProtectedVM>,
  protectionIds: ReadonlyMap<string, readonly string[]>,
): void {
  const env: Env = { observed, testNetworks: new Map(), azure: new Set(desired.sites.filter((s) => s.spec.type === 'azure').map((s) => s.metadata.name)) };
  for (const m of [...desired.networkMappings].sort((a, z) => (a.metadata.name < z.metadata.name ? -1 : 1))) {
    const key = `${m.spec.source.site}\0${m.spec.target.site}`;
    if (m.spec.testNetwork !== undefined && !env.testNetworks.has(key)) env.testNetworks.set(key, m.spec.testNetwork);
  }
  // A VM taken by one plan's request in this pass is not offered to another's: two failovers of
  // the same VM at once would fight.
  const claimed = new Map<string, string>();
  for (const rp of [...desired.recoveryPlans].sort((a, z) => (a.metadata.name < z.metadata.name ? -1 : 1))) {
    const request = rp.spec.failover;
    if (request) planRequest(b, env, rp, request, declared, protectionIds, claimed);
  }
}

function planRequest(
  b: PlanBuilder,
  env: Env,
  rp: RecoveryPlan,
  f: FailoverRequest,
  declared: ReadonlyMap<string, ProtectedVM>,
  protectionIds: ReadonlyMap<string, readonly string[]>,
  claimed: Map<string, string>,
): void {
  const name = rp.metadata.name;
  const target: Target = { kind: 'RecoveryPlan', name };
  const last = lookup(env.observed.recoveryPlans, name);
  if (last?.lastActionId === f.id) {
    if (last.lastActionState === 'Failed') {
      b.warn('last-action-failed', target, `failover ${f.id} (${f.type}) failed; declare a new failover.id to run it again`);
    }
    return;
  }
  if (last?.lastActionState === 'Running' || last?.lastActionState === 'Waiting') {
    b.warn('failover-waiting', target, `failover ${f.id} (${f.type}) waits: the previous action ${last.lastActionId} is still ${last.lastActionState}`);
    return;
  }

  const groups: { index: number; groupName?: string; vms: { vm: string; steps: Step[] }[] }[] = [];
  // Refused: the request cannot run in the state the sites report (an error until the state or
  // the declaration changes). Waiting: it will run once something already under way is done.
  const refusals: string[] = [];
  const waits: string[] = [];
  const seen = new Set<string>();
  rp.spec.groups.forEach((g, index) => {
    const vms: { vm: string; steps: Step[] }[] = [];
    // VMs of a group fail over in parallel; sorting them only makes the plan deterministic.
    for (const vm of [...g.vms].sort()) {
      if (seen.has(vm)) continue;
      seen.add(vm);
      const other = claimed.get(vm);
      const pvm = declared.get(vm);
      const rel = lookup(env.observed.relationships, vm);
      if (other !== undefined) waits.push(`${vm} is already part of recovery plan ${other}'s failover in this pass`);
      else if (!pvm) refusals.push(`${vm} is not a declared ProtectedVM`);
      else if (!rel || !rel.exists || rel.state === 'Disabled') waits.push(`${vm} is not protected yet`);
      else {
        const result = stepsFor(env, f, rel);
        if (typeof result === 'string') refusals.push(result);
        else if (result.length > 0) vms.push({ vm, steps: result });
      }
    }
    groups.push({ index, ...(g.name !== undefined && { groupName: g.name }), vms });
  });

  const what = `failover ${f.id} (${f.type})`;
  if (refusals.length > 0 || waits.length > 0) {
    for (const r of refusals) b.warn('failover-refused', target, `${what} refused: ${r}`);
    for (const w of waits) b.warn('failover-waiting', target, `${what} waits: ${w}`);
    return;
  }
  if (groups.every((g) => g.vms.length === 0)) {
    b.warn('failover-nothing-to-do', target, `${what}: nothing to do (no test failover is active)`);
    return;
  }

  let barrier: string[] = [];
  for (const g of groups) {
    const origin: FailoverOrigin = { recoveryPlan: name, failoverId: f.id, groupIndex: g.index, ...(g.groupName !== undefined && { groupName: g.groupName }) };
    const lastOfGroup: string[] = [];
    for (const { vm, steps } of g.vms) {
      claimed.set(vm, name);
      let prev: string[] = [...barrier, ...(protectionIds.get(vm) ?? [])];
      steps.forEach((s, i) => {
        const id = b.add(
          s.type, { kind: 'ProtectedVM', name: vm },
          `recovery plan ${name}, ${what}, group ${g.index + 1}${g.groupName ? ` (${g.groupName})` : ''}: ${s.reason}`,
          !NON_DESTRUCTIVE.has(s.type),
          { ...origin, ...s.details } as never,
          prev,
          `@RecoveryPlan/${name}/${f.id}#${i}`,
        );
        prev = [id];
      });
      lastOfGroup.push(...prev);
    }
    // Group barrier: the next group starts only when every VM of this one has finished.
    if (lastOfGroup.length > 0) barrier = lastOfGroup;
  }
}

/** The steps one VM needs for the request, or why it cannot take part. */
function stepsFor(env: Env, f: FailoverRequest, rel: ObservedRelationship): Step[] | string {
  const { primary: src, replica: dst } = rel.direction;
  const up = (s: string): boolean => lookup(env.observed.sites, s)?.reachable === true;
  const needUp = (...sites: string[]): string | null => {
    const down = sites.filter((s) => !up(s));
    return down.length > 0 ? `${rel.name}: site ${down.join(', ')} unreachable` : null;
  };
  const point = f.recoveryPoint ?? 'latest';
  const pending = rel.state === 'FailoverWaitingCompletion';
  if (pending && f.type !== 'commit' && f.type !== 'cancel') {
    return `${rel.name} is FailoverWaitingCompletion: commit or cancel that failover first`;
  }
  switch (f.type) {
    case 'test': {
      if (f.cleanupTest) {
        if (rel.testFailover !== 'active') return [];
        return needUp(dst) ?? [{ type: 'cleanup-test-failover', reason: `remove test VM(s) ${rel.testVms.join(', ')} on ${dst}`, details: { site: dst, testVms: [...rel.testVms] } }];
      }
      if (!inGroup(rel.state, 'steady', 'resync')) return `${rel.name} is ${rel.state}: test failover needs a replicating relationship`;
      if (rel.testFailover === 'active') return `${rel.name} already has an active test failover (${rel.testVms.join(', ')}): clean it up first (cleanupTest: true)`;
      if (rel.recoveryPoints === 0) return `${rel.name} has no recovery point yet`;
      const testNetwork = env.testNetworks.get(`${src}\0${dst}`) ?? null;
      return needUp(dst) ?? [{
        type: 'test-failover',
        reason: `start ${rel.vm}-Test on ${dst} from the ${point} recovery point, ${testNetwork ? `on network ${testNetwork}` : 'network disconnected'}`,
        details: { site: dst, recoveryPoint: point, testVm: `${rel.vm}-Test`, testNetwork },
      }];
    }
    case 'planned': {
      if (rel.state !== 'Replicating') return `${rel.name} is ${rel.state}: planned failover needs Replicating`;
      const toAzure = env.azure.has(dst);
      const start = toAzure ? `write the Terraform that starts it in Azure (${dst})` : `start it on ${dst}`;
      const steps: Step[] = [{ type: 'planned-failover', reason: `shut down ${rel.vm} on ${src}, ship the final delta, ${start} (no data loss)`, details: { from: src, to: dst, recoveryPoint: 'latest', ...(f.forceShutdown && { forceShutdown: true }) } }];
      if (f.commit) steps.push({ type: 'commit-failover', reason: `commit on ${dst} (commit: true)`, details: { site: dst } });
      // Nothing replicates back from Azure: failback downloads what changed there instead.
      if (f.commit && !toAzure) steps.push({ type: 'reverse-replication', reason: `replicate back ${dst} -> ${src}`, details: { from: dst, to: src } });
      return needUp(src, dst) ?? steps;
    }
    case 'unplanned': {
      // Unplanned failover is for a lost primary, so a Critical relationship may still fail over.
      if (!inGroup(rel.state, 'steady', 'resync', 'critical')) return `${rel.name} is ${rel.state}: unplanned failover needs a replicating relationship`;
      if (rel.recoveryPoints === 0) return `${rel.name} has no recovery point yet`;
      const steps: Step[] = [{ type: 'unplanned-failover', reason: `start ${rel.vm} on ${dst} from the ${point} recovery point (changes since it are lost)`, details: { from: src, to: dst, recoveryPoint: point } }];
      if (f.commit) steps.push({ type: 'commit-failover', reason: `commit on ${dst} (commit: true)`, details: { site: dst } });
      return needUp(dst) ?? steps;
    }
    case 'commit':
      if (!pending) return `${rel.name} is ${rel.state}: nothing waits for a commit`;
      return needUp(src) ?? [{ type: 'commit-failover', reason: `commit the failover on ${src}: other recovery points are discarded, cancel is no longer possible`, details: { site: src } }];
    case 'cancel':
      if (!pending) return `${rel.name} is ${rel.state}: nothing to cancel`;
      return needUp(src) ?? [{ type: 'cancel-failover', reason: `cancel the failover: stop ${rel.vm} on ${src} (its changes are discarded), back to replicating from ${rel.primary}`, details: { site: src } }];
    case 'failback': {
      // After a failover `direction` already points away from the declared primary; failback
      // brings the VM home and restores the declared direction.
      if (src === rel.primary) return `${rel.name} runs on its declared primary ${rel.primary}: nothing to fail back`;
      const method = f.failbackMethod ?? 'minimize-downtime';
      const home = rel.primary;
      if (env.azure.has(src)) {
        if (rel.state !== 'FailedOver') return `${rel.name} is ${rel.state} in Azure: commit the failover before failing back`;
        return needUp(src, home) ?? [{
          type: 'failback',
          reason: `bring ${rel.vm} home from Azure (${src}) to ${home} (${method}), then replicate ${home} -> ${src} again`,
          details: { from: src, to: home, method },
        }];
      }
      const steps: Step[] = [];
      if (rel.state === 'FailedOver') {
        steps.push({ type: 'reverse-replication', reason: `replicate ${src} -> ${home} first, so ${home} is current`, details: { from: src, to: home } });
      } else if (rel.state !== 'Replicating') {
        return `${rel.name} is ${rel.state}: failback needs FailedOver or reverse Replicating`;
      }
      steps.push(
        { type: 'failback', reason: `planned failover back from ${src} to ${home} (${method})`, details: { from: src, to: home, method, ...(f.forceShutdown && { forceShutdown: true }) } },
        { type: 'reverse-replication', reason: `restore the declared direction ${home} -> ${src}`, details: { from: home, to: src } },
      );
      return needUp(src, home) ?? steps;
    }
  }
}
