// observe(): what the sites report, mapped to the ObservedState the planner reads. It only reads
// (GET on every site, the vault's memory of what drsite created); it never changes anything.
//
// A ProtectedVM's current relationship is the one with the highest generation k among the ids
// drsite made (relationship-ids.ts). Its state comes from the primary side, except that a failover
// state reported by the replica side wins (the VM now runs there, so the direction is swapped).
import { dirname } from 'node:path';
import type { DesiredState } from '../model/desired.ts';
import type {
  Health, InitialReplicationProgress, ObservedRelationship, ObservedSite, ObservedState, ReplicationState,
} from '../model/observed.ts';
import { HEALTHS, REPLICATION_STATES } from '../model/observed.ts';
import type { SiteSet } from '../sites/open-sites.ts';
import type { SiteSnapshot } from '../sites/site.ts';
import type { RelationshipView } from '../transport/agent-api.ts';
import type { Vault } from '../vault/vault.ts';
import { RELATIONSHIP_FIELD, observeRecoveryPlans } from './observe-vault.ts';
import { parseExtendedId, parseRelationshipId } from './relationship-ids.ts';
import { getIdentity } from './status-fields.ts';
import { inGroup } from '../core/replication/replication-state.ts';

/** Where the current relationship of a ProtectedVM lives: what the executor needs to act on it. */
export interface CurrentRelationship {
  id: string;
  k: number;
  /** Site running the VM now (primary side of `id`) and the site receiving its changes. */
  primarySite: string;
  replicaSite: string;
  primaryView?: RelationshipView;
  replicaView?: RelationshipView;
}

export interface Observation {
  observed: ObservedState;
  snapshots: ReadonlyMap<string, SiteSnapshot>;
  current: ReadonlyMap<string, CurrentRelationship>;
}

const asState = (s: string | undefined): ReplicationState =>
  (REPLICATION_STATES as readonly string[]).includes(s ?? '') ? (s as ReplicationState) : 'Critical';
const HEALTH_RANK: Record<Health, number> = { Normal: 0, Warning: 1, Critical: 2 };

export async function observeSites(desired: DesiredState, sites: SiteSet, vault: Vault, now: Date): Promise<Observation> {
  const snapshots = new Map<string, SiteSnapshot>();
  await Promise.all(desired.sites.map(async (s) => {
    const name = s.metadata.name;
    const site = sites.sites.get(name);
    snapshots.set(name, site ? await site.snapshot() : { name, reachable: false, error: `${s.spec.type} sites are not driven by this reconciler` });
  }));
  return observationFrom(desired, snapshots, vault, now);
}

/** The pure half of observe: snapshots + the vault's memory -> ObservedState. */
export function observationFrom(desired: DesiredState, snapshots: ReadonlyMap<string, SiteSnapshot>, vault: Vault, now: Date): Observation {
  const sites: Record<string, ObservedSite> = {};
  const found = new Map<string, { k: number; site: string; view: RelationshipView }[]>();
  /** Extended hops by ProtectedVM, as their source (the replica site) reports them. */
  const extended = new Map<string, RelationshipView>();
  for (const [name, snap] of snapshots) {
    if (!snap.reachable) {
      sites[name] = { name, reachable: false };
      continue;
    }
    sites[name] = {
      name,
      reachable: true,
      vms: Object.fromEntries(snap.vms.map((vm) => [vm.name, { disks: vm.disks.map((d) => d.name), running: vm.power === 'Running' }])),
    };
    for (const view of snap.relationships) {
      const extendedOf = parseExtendedId(view.id);
      if (extendedOf !== undefined) {
        if (view.role === 'Primary') extended.set(extendedOf, view);
        continue;
      }
      const parsed = parseRelationshipId(view.id);
      if (!parsed) continue; // not made by drsite: nothing here can name its ProtectedVM
      const list = found.get(parsed.protectedVm) ?? [];
      list.push({ k: parsed.k, site: name, view });
      found.set(parsed.protectedVm, list);
    }
  }

  const relationships: Record<string, ObservedRelationship> = {};
  const current = new Map<string, CurrentRelationship>();
  const declared = new Map(desired.protectedVms.map((p) => [p.metadata.name, p]));
  for (const [name, entries] of found) {
    const k = Math.max(...entries.map((e) => e.k));
    const mine = entries.filter((e) => e.k === k);
    const p = mine.find((e) => e.view.role === 'Primary');
    const r = mine.find((e) => e.view.role === 'Replica');
    const primarySite = p?.site ?? r!.view.peer;
    const replicaSite = r?.site ?? p!.view.peer;
    const id = (p ?? r)!.view.id;
    current.set(name, { id, k, primarySite, replicaSite, ...(p && { primaryView: p.view }), ...(r && { replicaView: r.view }) });
    relationships[name] = toObserved(name, k, primarySite, replicaSite, p?.view, r?.view, snapshots, vault, declared.get(name)?.spec.policy);
    const ext = extended.get(name);
    if (ext?.policy) {
      relationships[name].extendedReplica = {
        site: ext.peer,
        policy: { name: declared.get(name)?.spec.extendedReplica?.policy ?? 'unknown', spec: ext.policy },
        state: ext.state as ObservedRelationship['state'],
      };
      relationships[name].roles[ext.peer] = 'ExtendedReplica';
    }
  }

  // A relationship the vault remembers whose sites cannot be reached now: keep the last known value
  // so the planner neither re-enables it nor forgets it.
  for (const s of vault.listStatus('ProtectedVM')) {
    if (Object.hasOwn(relationships, s.name)) continue;
    const rel = s.fields[RELATIONSHIP_FIELD] as ObservedRelationship | undefined;
    if (!rel || !rel.exists) continue;
    const seen = [rel.direction.primary, rel.direction.replica].some((site) => sites[site]?.reachable === true);
    if (!seen) relationships[s.name] = rel;
  }

  const recoveryPlans = observeRecoveryPlans(desired, vault);
  for (const site of desired.sites) sites[site.metadata.name] ??= { name: site.metadata.name, reachable: false };
  return { observed: { observedAt: now.toISOString(), relationships, recoveryPlans, sites }, snapshots, current };
}

function toObserved(
  name: string,
  k: number,
  primarySite: string,
  replicaSite: string,
  p: RelationshipView | undefined,
  r: RelationshipView | undefined,
  snapshots: ReadonlyMap<string, SiteSnapshot>,
  vault: Vault,
  declaredPolicy: string | undefined,
): ObservedRelationship {
  const identity = getIdentity(vault, name);
  const any = (p ?? r)!;
  let state = asState(p?.state ?? r?.state);
  let direction = { primary: primarySite, replica: replicaSite };
  if (r && inGroup(r.state, 'failedOver')) {
    state = asState(r.state);
    direction = { primary: replicaSite, replica: primarySite };
  }
  // Even generations run the declared direction, odd ones (reverse replication) the other way.
  const declared = k % 2 === 0 ? { primary: primarySite, replica: replicaSite } : { primary: replicaSite, replica: primarySite };
  const healths = [p?.health, r?.health].filter((h): h is Health => (HEALTHS as readonly string[]).includes(h ?? ''));
  const health = healths.reduce<Health>((w, h) => (HEALTH_RANK[h] > HEALTH_RANK[w] ? h : w), 'Normal');
  const testSite = snapshots.get(direction.replica);
  const testVms = testSite?.reachable
    ? testSite.vms.filter((vm) => vm.origin?.kind === 'test' ? parseRelationshipId(vm.origin.relationshipId)?.protectedVm === name : vm.name === `${any.vm}-Test`).map((vm) => vm.name).sort()
    : [];
  const policy = p?.policy ?? r?.policy;
  const point = r?.lastReplicationTime !== undefined ? r : p;
  const initial = p?.initialReplication;
  const reasons = [...new Set([...(p?.healthReasons ?? []), ...(r?.healthReasons ?? [])])];
  const lastError = p?.lastError ?? r?.lastError;
  return {
    name,
    vm: any.vm,
    primary: declared.primary,
    replica: declared.replica,
    managed: identity.managed,
    exists: true,
    state,
    health,
    ...(state === 'Suspended' && p?.suspendedBy && { suspendedBy: p.suspendedBy }),
    roles: { [direction.primary]: 'Primary', [direction.replica]: 'Replica' },
    direction,
    ...(policy && { appliedPolicy: { name: identity.policyName ?? declaredPolicy ?? 'unknown', spec: policy } }),
    disks: any.disks.map((d) => d.id).sort(),
    // The replica keeps `<root>/<relationship id>`: the root is what a declaration names.
    ...(r?.storagePath !== undefined ? { replicaStoragePath: dirname(r.storagePath) } : p?.storagePath !== undefined ? { replicaStoragePath: p.storagePath } : {}),
    testFailover: testVms.length > 0 ? 'active' : 'none',
    testVms,
    ...(point?.lastReplicationTime !== undefined && { lastReplicationTime: point.lastReplicationTime }),
    ...(point?.lagSeconds !== undefined && { lagSeconds: point.lagSeconds }),
    pendingBytes: p?.pendingBytes ?? 0,
    ...(initial && inGroup(state, 'initial') && {
      initialReplication: { method: initial.method as InitialReplicationProgress['method'], bytesDone: initial.bytesDone, bytesTotal: initial.bytesTotal },
    }),
    recoveryPoints: r?.recoveryPoints ?? 0,
    ...(reasons.length > 0 && { healthReasons: reasons }),
    ...(lastError && { lastError }),
    ...(p?.nextRetryAt && { nextRetryAt: p.nextRetryAt }),
  };
}

