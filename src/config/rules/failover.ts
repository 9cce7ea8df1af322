// Rules on what a failover uses: network mappings (one target network per site, test networks
// isolated) and recovery plans (each VM once, one direction, options that fit the failover type).
import type { Diagnostic } from '../../model/diagnostics.ts';
import type { NetworkMapping } from '../../model/desired.ts';
import { formatPath, type Segment } from '../field-path.ts';
import { byName, diag, where, type Declared, type Rule } from './support.ts';

// --- network mappings ------------------------------------------------------------------------------

/** A source network maps to one network per target site; a mapping joins two different sites. */
export const networkMappingConflicts: Rule = (input) => {
  const out: Diagnostic[] = [];
  const first = new Map<string, Declared<NetworkMapping>>();
  for (const d of input.networkMappings) {
    const { source, target } = d.resource.spec;
    if (source.site === target.site) {
      out.push(diag(d, ['spec', 'target', 'site'], `network mapping stays on site "${source.site}"`,
        'a network mapping says which network a VM joins after failover to another site: spec.target.site must differ from spec.source.site'));
      continue;
    }
    const key = `${source.site}\u0000${source.network}\u0000${target.site}`;
    const prev = first.get(key);
    if (prev) {
      out.push(diag(d, ['spec', 'source', 'network'], `network "${source.network}" on site "${source.site}" is already mapped to site "${target.site}"`,
        `by NetworkMapping "${prev.resource.metadata.name}" (${where(prev)}); a source network maps to one target network per site`));
    } else {
      first.set(key, d);
    }
  }
  return out;
};

/** Test failover VMs on the production network would clash with the running originals. */
export const testNetworkIsolated: Rule = (input) =>
  input.networkMappings
    .filter((d) => d.resource.spec.testNetwork !== undefined && d.resource.spec.testNetwork === d.resource.spec.target.network)
    .map((d) => diag(d, ['spec', 'testNetwork'], `test network is the production network "${d.resource.spec.target.network}"`,
      'test failover VMs would run next to the production VMs with the same addresses; use an isolated network', 'warning'));

// --- recovery plans ------------------------------------------------------------------------------

/** A VM fails over once per plan: it may appear in one group, once. */
export const recoveryPlanVmsOnce: Rule = (input) => {
  const out: Diagnostic[] = [];
  for (const d of input.recoveryPlans) {
    const seen = new Map<string, Segment[]>();
    d.resource.spec.groups.forEach((g, gi) => g.vms.forEach((vm, vi) => {
      const path = ['spec', 'groups', gi, 'vms', vi];
      const prev = seen.get(vm);
      if (prev) {
        out.push(diag(d, path, `VM "${vm}" appears twice in the plan`,
          `it is already at ${formatPath(prev)}; a VM fails over once per plan, in one group`));
      } else {
        seen.set(vm, path);
      }
    }));
  }
  return out;
};

/** Like Site Recovery: all VMs of a plan fail over in one direction, between one pair of sites. */
export const recoveryPlanSingleDirection: Rule = (input) => {
  const vms = byName(input.protectedVms);
  const out: Diagnostic[] = [];
  for (const d of input.recoveryPlans) {
    let pair: { primary: string; replica: string; vm: string } | undefined;
    d.resource.spec.groups.forEach((g, gi) => g.vms.forEach((name, vi) => {
      const vm = vms.get(name)?.resource.spec;
      if (!vm) return;
      if (!pair) {
        pair = { primary: vm.primary, replica: vm.replica, vm: name };
      } else if (vm.primary !== pair.primary || vm.replica !== pair.replica) {
        out.push(diag(d, ['spec', 'groups', gi, 'vms', vi], `VM "${name}" replicates ${vm.primary} -> ${vm.replica}, unlike the rest of the plan`,
          `"${pair.vm}" replicates ${pair.primary} -> ${pair.replica}; all VMs of a recovery plan need the same primary and replica sites`));
      }
    }));
  }
  return out;
};

/** Failover options that only make sense for some failover types. */
export const failoverOptionsMatchType: Rule = (input) => {
  const out: Diagnostic[] = [];
  for (const d of input.recoveryPlans) {
    const f = d.resource.spec.failover;
    if (!f) continue;
    const at = (field: string) => ['spec', 'failover', field];
    if (f.cleanupTest === true && f.type !== 'test') {
      out.push(diag(d, at('cleanupTest'), `cleanupTest applies to test failover, not "${f.type}"`,
        'cleanupTest removes the VMs of the previous test failover; use it with type: test, or remove it'));
    }
    if (f.failbackMethod !== undefined && f.type !== 'failback') {
      out.push(diag(d, at('failbackMethod'), `failbackMethod applies to failback, not "${f.type}"`,
        'failbackMethod chooses how data returns to the primary site; use it with type: failback, or remove it'));
    }
    if (f.commit === true && (f.type === 'test' || f.type === 'cancel')) {
      out.push(diag(d, at('commit'), `a ${f.type} failover cannot be committed`,
        f.type === 'test' ? 'a test failover runs copies next to the primary and is cleaned up, never committed; remove commit: true'
          : 'cancel undoes a failover; it cannot also commit it; remove commit: true'));
    }
    if (f.recoveryPoint !== undefined && f.type !== 'test' && f.type !== 'unplanned') {
      out.push(diag(d, at('recoveryPoint'), `recoveryPoint applies to test and unplanned failover, not "${f.type}"`,
        f.type === 'planned' || f.type === 'failback'
          ? 'a planned failover first replicates every pending change and fails over to that latest state; remove recoveryPoint'
          : `${f.type} acts on the failover already made; remove recoveryPoint`));
    }
  }
  return out;
};
