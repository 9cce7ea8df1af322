// Rules on replication across hops and VMs: extended replication (a third site, no faster than
// the first hop), replication groups (consistent policy, same sites), initial replication from
// external media, and application-consistent points within retention.
import type { Diagnostic } from '../../model/diagnostics.ts';
import type { ProtectedVM } from '../../model/desired.ts';
import { byName, diag, where, type Declared, type Rule } from './support.ts';

// --- extended replication -----------------------------------------------------------------------

/** The extended replica is a third site, reached from a host replica site. */
export const extendedReplicaSite: Rule = (input) => {
  const sites = byName(input.sites);
  const out: Diagnostic[] = [];
  for (const d of input.protectedVms) {
    const s = d.resource.spec;
    if (!s.extendedReplica) continue;
    if (s.extendedReplica.site === s.primary || s.extendedReplica.site === s.replica) {
      const role = s.extendedReplica.site === s.primary ? 'primary' : 'replica';
      out.push(diag(d, ['spec', 'extendedReplica', 'site'], `extended replica site "${s.extendedReplica.site}" is the ${role} site`,
        'extended replication copies the replica to a third site: name a Site other than spec.primary and spec.replica'));
    } else if (sites.get(s.replica)?.resource.spec.type === 'azure') {
      out.push(diag(d, ['spec', 'extendedReplica'], `replica site "${s.replica}" is an azure site and cannot replicate further`,
        'extended replication starts from a host replica site; remove spec.extendedReplica or replicate to a host site first'));
    }
  }
  return out;
};

const FREQUENCY_SECONDS: Record<string, number> = { continuous: 1, '30s': 30, '5m': 300, '15m': 900 };

/** Hyper-V: extended replication runs every 5 or 15 minutes, never faster than the first hop. */
export const extendedReplicaFrequency: Rule = (input) => {
  const policies = byName(input.policies);
  const out: Diagnostic[] = [];
  for (const d of input.protectedVms) {
    const ext = d.resource.spec.extendedReplica;
    const extPolicy = ext ? policies.get(ext.policy)?.resource : undefined;
    const firstPolicy = policies.get(d.resource.spec.policy)?.resource;
    if (!ext || !extPolicy) continue;
    const extFreq = extPolicy.spec.frequency ?? '5m';
    if (extFreq === '30s' || extFreq === 'continuous') {
      const every = extFreq === '30s' ? 'every 30s' : 'continuously';
      out.push(diag(d, ['spec', 'extendedReplica', 'policy'], `extended replication cannot run ${every}`,
        `policy "${ext.policy}" replicates ${every}; extended replication needs a policy with frequency 5m or 15m`));
    } else if (firstPolicy && FREQUENCY_SECONDS[extFreq] < FREQUENCY_SECONDS[firstPolicy.spec.frequency ?? '5m']) {
      out.push(diag(d, ['spec', 'extendedReplica', 'policy'], `extended replication (every ${extFreq}) is faster than the first hop (every ${firstPolicy.spec.frequency})`,
        `policy "${d.resource.spec.policy}" replicates every ${firstPolicy.spec.frequency}; the extended policy must replicate every ${firstPolicy.spec.frequency} or less often`));
    }
  }
  return out;
};

// --- replication groups and policies --------------------------------------------------------------

/** Multi-VM consistency groups need a policy that takes shared cut instants. */
export const replicationGroupNeedsConsistency: Rule = (input) => {
  const policies = byName(input.policies);
  return input.protectedVms
    .filter((d) => d.resource.spec.replicationGroup !== undefined)
    .filter((d) => policies.get(d.resource.spec.policy)?.resource.spec.multiVmConsistency === false)
    .map((d) => diag(d, ['spec', 'replicationGroup'], `replication group "${d.resource.spec.replicationGroup}" needs multi-VM consistency`,
      `policy "${d.resource.spec.policy}" does not set multiVmConsistency: true; set it there or remove spec.replicationGroup`));
};

/**
 * `multiVmConsistency: true` only acts through replication groups: a policy that sets it while no
 * VM using it names a spec.replicationGroup takes every VM's points on its own (a warning, so the
 * operator does not believe their VMs are consistent with each other).
 */
export const consistencyWithoutGroup: Rule = (input) => {
  const grouped = new Set(input.protectedVms.filter((d) => d.resource.spec.replicationGroup !== undefined).map((d) => d.resource.spec.policy));
  return input.policies
    .filter((p) => p.resource.spec.multiVmConsistency === true && !grouped.has(p.resource.metadata.name))
    .map((p) => diag(p, ['spec', 'multiVmConsistency'], `multiVmConsistency has no effect: no VM of policy "${p.resource.metadata.name}" is in a replication group`,
      'each VM still gets recovery points of its own; give the VMs that must be consistent with each other the same spec.replicationGroup, or remove multiVmConsistency', 'warning'));
};

/** Members of one replication group share cut instants, so they share primary, replica and policy. */
export const replicationGroupSameSites: Rule = (input) => {
  const out: Diagnostic[] = [];
  const first = new Map<string, Declared<ProtectedVM>>();
  for (const d of input.protectedVms) {
    const s = d.resource.spec;
    if (s.replicationGroup === undefined) continue;
    const prev = first.get(s.replicationGroup);
    if (!prev) {
      first.set(s.replicationGroup, d);
      continue;
    }
    const p = prev.resource.spec;
    if (p.primary !== s.primary || p.replica !== s.replica || p.policy !== s.policy) {
      out.push(diag(d, ['spec', 'replicationGroup'], `replication group "${s.replicationGroup}" mixes sites or policies`,
        `ProtectedVM "${prev.resource.metadata.name}" (${where(prev)}) replicates ${p.primary} -> ${p.replica} under policy "${p.policy}"; ` +
        `every member of a group needs the same primary, replica and policy`));
    }
  }
  return out;
};

/** Initial replication from external media needs the folder the media is written to and read from. */
export const externalMediaNeedsPath: Rule = (input) => {
  const out: Diagnostic[] = [];
  for (const d of input.policies) {
    const ir = d.resource.spec.initialReplication ?? {};
    if (ir.method === 'external-media' && ir.mediaPath === undefined) {
      out.push(diag(d, ['spec', 'initialReplication', 'method'], 'external-media initial replication needs mediaPath',
        'set spec.initialReplication.mediaPath to the folder the initial copy is exported to and imported from'));
    } else if (ir.method !== 'external-media' && ir.mediaPath !== undefined) {
      out.push(diag(d, ['spec', 'initialReplication', 'mediaPath'], `mediaPath is ignored with method "${ir.method}"`,
        'mediaPath is only used when spec.initialReplication.method is external-media', 'warning'));
    }
  }
  return out;
};

/** An application-consistent point is only useful if points are kept long enough to hold one. */
export const appConsistentWithinRetention: Rule = (input) => {
  const out: Diagnostic[] = [];
  for (const d of input.policies) {
    const s = d.resource.spec;
    const every = s.appConsistentEvery === undefined || s.appConsistentEvery === '0' ? 0 : Number.parseInt(s.appConsistentEvery, 10);
    if (every === 0) continue;
    const keptHours = s.recoveryPoints?.retention !== undefined ? Number.parseInt(s.recoveryPoints.retention, 10) : (s.recoveryPoints?.additional ?? 0);
    if (keptHours < every) {
      out.push(diag(d, ['spec', 'appConsistentEvery'], `application-consistent points every ${s.appConsistentEvery} may not be kept`,
        `recovery points cover ${keptHours}h; keep at least ${every}h (recoveryPoints.additional or retention) or take them more often`, 'warning'));
    }
  }
  return out;
};
