// Semantic rules: what a schema cannot say about one document alone (references between
// documents, frequencies across hops, conflicts), each a small named function that returns
// diagnostics pointing at the offending field. Rules see resources with defaults applied.
import type { Diagnostic, Severity } from '../model/diagnostics.ts';
import type {
  Kind, NetworkMapping, ProtectedVM, RecoveryPlan, ReplicationPolicy, Resource, Site,
} from '../model/desired.ts';
import { formatPath, type Segment } from './field-path.ts';
import { didYouMean } from './suggest.ts';
import type { SourceDocument } from './yaml-source.ts';

/** A validated resource (defaults applied) and the document it came from. */
export interface Declared<R extends Resource = Resource> {
  resource: R;
  doc: SourceDocument;
}

export interface RuleInput {
  sites: Declared<Site>[];
  policies: Declared<ReplicationPolicy>[];
  networkMappings: Declared<NetworkMapping>[];
  protectedVms: Declared<ProtectedVM>[];
  recoveryPlans: Declared<RecoveryPlan>[];
  /**
   * `Kind/name` of documents that declare a name but failed earlier checks: a reference to them
   * is not reported as dangling, so one mistake does not cascade into many.
   */
  invalid: ReadonlySet<string>;
}

export type Rule = (input: RuleInput) => Diagnostic[];

/** Environment variable names as shells accept them; anything else is treated as a secret. */
export const ENV_VAR_NAME = /^[A-Z_][A-Z0-9_]*$/;

function diag(d: Declared, path: Segment[], summary: string, detail: string, severity: Severity = 'error', target: 'key' | 'value' = 'value'): Diagnostic {
  const p = d.doc.locate(path, target);
  return { severity, summary, detail, file: d.doc.file, line: p.line, column: p.column, path: formatPath(path) };
}

const where = (d: Declared): string => {
  const p = d.doc.locate(['metadata', 'name']);
  return `${d.doc.file}:${p.line}:${p.column}`;
};

const byName = <R extends Resource>(list: Declared<R>[]): Map<string, Declared<R>> => {
  const m = new Map<string, Declared<R>>();
  for (const d of list) if (!m.has(d.resource.metadata.name)) m.set(d.resource.metadata.name, d);
  return m;
};

const FREQUENCY_SECONDS: Record<string, number> = { continuous: 1, '30s': 30, '5m': 300, '15m': 900 };

// --- names and references -------------------------------------------------------------------

/** Two resources of one kind with the same name: the later ones are errors. */
export const duplicateNames: Rule = (input) => {
  const out: Diagnostic[] = [];
  for (const list of [input.sites, input.policies, input.networkMappings, input.protectedVms, input.recoveryPlans] as Declared[][]) {
    const first = new Map<string, Declared>();
    for (const d of list) {
      const name = d.resource.metadata.name;
      const prev = first.get(name);
      if (prev) out.push(diag(d, ['metadata', 'name'], `duplicate ${d.resource.kind} name "${name}"`, `already declared at ${where(prev)}; names are unique per kind`));
      else first.set(name, d);
    }
  }
  return out;
};

/** References to sites, policies and protected VMs that nothing declares. */
export const danglingReferences: Rule = (input) => {
  const out: Diagnostic[] = [];
  const names: Record<string, Set<string>> = {
    Site: new Set(input.sites.map((d) => d.resource.metadata.name)),
    ReplicationPolicy: new Set(input.policies.map((d) => d.resource.metadata.name)),
    ProtectedVM: new Set(input.protectedVms.map((d) => d.resource.metadata.name)),
  };
  const check = (d: Declared, path: Segment[], kind: Kind, name: string | undefined, what: string) => {
    if (name === undefined || names[kind].has(name) || input.invalid.has(`${kind}/${name}`)) return;
    const known = [...names[kind]].sort();
    out.push(diag(d, path, `${what} "${name}" is not declared`,
      `${formatPath(path)} must name a ${kind}; declared: ${known.join(', ') || '(none)'}${didYouMean(name, known)}`));
  };
  for (const d of input.protectedVms) {
    const s = d.resource.spec;
    check(d, ['spec', 'primary'], 'Site', s.primary, 'primary site');
    check(d, ['spec', 'replica'], 'Site', s.replica, 'replica site');
    check(d, ['spec', 'policy'], 'ReplicationPolicy', s.policy, 'policy');
    check(d, ['spec', 'extendedReplica', 'site'], 'Site', s.extendedReplica?.site, 'extended replica site');
    check(d, ['spec', 'extendedReplica', 'policy'], 'ReplicationPolicy', s.extendedReplica?.policy, 'extended replica policy');
  }
  for (const d of input.networkMappings) {
    check(d, ['spec', 'source', 'site'], 'Site', d.resource.spec.source.site, 'source site');
    check(d, ['spec', 'target', 'site'], 'Site', d.resource.spec.target.site, 'target site');
  }
  for (const d of input.recoveryPlans) {
    d.resource.spec.groups.forEach((g, gi) => g.vms.forEach((vm, vi) =>
      check(d, ['spec', 'groups', gi, 'vms', vi], 'ProtectedVM', vm, 'protected VM')));
  }
  return out;
};

// --- sites and direction ----------------------------------------------------------------------

/** A VM replicates to another site, never to the one it runs on. */
export const primaryIsNotReplica: Rule = (input) =>
  input.protectedVms
    .filter((d) => d.resource.spec.primary === d.resource.spec.replica)
    .map((d) => diag(d, ['spec', 'replica'], `replica site "${d.resource.spec.replica}" is also the primary site`,
      'spec.replica must name a different Site than spec.primary'));

/** Azure only receives replicas (Site Recovery's model); VMs run on host sites. */
export const azureIsNotPrimary: Rule = (input) => {
  const sites = byName(input.sites);
  return input.protectedVms
    .filter((d) => sites.get(d.resource.spec.primary)?.resource.spec.type === 'azure')
    .map((d) => diag(d, ['spec', 'primary'], `primary site "${d.resource.spec.primary}" is an azure site`,
      'an azure site only holds replicas; spec.primary must name a host site'));
};

/** A host site receives replicas only once it is enabled as a Replica server (Hyper-V's rule). */
export const replicaSiteAcceptsReplication: Rule = (input) => {
  const sites = byName(input.sites);
  const out: Diagnostic[] = [];
  const check = (d: Declared, path: Segment[], name: string | undefined) => {
    const site = name === undefined ? undefined : sites.get(name);
    if (!site || site.resource.spec.type !== 'host' || site.resource.spec.replicaServer?.enabled === true) return;
    out.push(diag(d, path, `site "${name}" is not a Replica server`,
      `set spec.replicaServer.enabled: true on Site "${name}" (${where(site)}) so that it accepts replication`));
  };
  for (const d of input.protectedVms) {
    const s = d.resource.spec;
    // A replica or extended site that repeats an earlier hop is reported by its own rule.
    if (s.replica !== s.primary) check(d, ['spec', 'replica'], s.replica);
    const ext = s.extendedReplica?.site;
    if (ext !== s.primary && ext !== s.replica) check(d, ['spec', 'extendedReplica', 'site'], ext);
  }
  return out;
};

/** Embedded sites share one process and one host: two Replica servers cannot listen on one port. */
export const embeddedReplicaPortsDistinct: Rule = (input) => {
  const out: Diagnostic[] = [];
  const first = new Map<number, Declared<Site>>();
  for (const d of input.sites) {
    const s = d.resource.spec;
    if (s.type !== 'host' || s.endpoint !== undefined || s.replicaServer?.enabled !== true || s.replicaServer.port === undefined) continue;
    const prev = first.get(s.replicaServer.port);
    if (prev) {
      out.push(diag(d, ['spec', 'replicaServer', 'port'], `port ${s.replicaServer.port} is already used by embedded site "${prev.resource.metadata.name}"`,
        `embedded sites run in one drsite process; give each Replica server its own spec.replicaServer.port (the default is 8443)`));
    } else {
      first.set(s.replicaServer.port, d);
    }
  }
  return out;
};

/** One VM has one replication relationship: the same VM on the same primary protected twice is an error. */
export const vmProtectedOnce: Rule = (input) => {
  const out: Diagnostic[] = [];
  const first = new Map<string, Declared<ProtectedVM>>();
  for (const d of input.protectedVms) {
    const key = `${d.resource.spec.primary}\u0000${d.resource.spec.vm}`;
    const prev = first.get(key);
    if (prev) {
      out.push(diag(d, ['spec', 'vm'], `VM "${d.resource.spec.vm}" on site "${d.resource.spec.primary}" is already protected`,
        `by ProtectedVM "${prev.resource.metadata.name}" (${where(prev)}); a VM has one replication relationship`));
    } else {
      first.set(key, d);
    }
  }
  return out;
};

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

// --- secrets -------------------------------------------------------------------------------------

/** Credentials name environment variables; a value that is not a name is a secret and never echoed. */
export const credentialsAreEnvNames: Rule = (input) => {
  const out: Diagnostic[] = [];
  for (const d of input.sites) {
    for (const [key, value] of Object.entries(d.resource.spec.credentials ?? {})) {
      if (typeof value === 'string' && ENV_VAR_NAME.test(value)) continue;
      // The value is deliberately left out of the message: it is most likely a secret.
      out.push(diag(d, ['spec', 'credentials', key], `spec.credentials.${key} must name an environment variable, not hold a secret`,
        'write the NAME of an environment variable (upper-case letters, digits and _, e.g. AZURE_STORAGE_KEY) and put the secret in that variable; ' +
        'the value written here is not repeated in this message — if it is a real secret, rotate it'));
    }
  }
  return out;
};

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

/** Every rule, in the order their diagnostics are reported. */
export const RULES: readonly Rule[] = [
  duplicateNames,
  danglingReferences,
  primaryIsNotReplica,
  azureIsNotPrimary,
  replicaSiteAcceptsReplication,
  embeddedReplicaPortsDistinct,
  vmProtectedOnce,
  extendedReplicaSite,
  extendedReplicaFrequency,
  replicationGroupNeedsConsistency,
  consistencyWithoutGroup,
  replicationGroupSameSites,
  externalMediaNeedsPath,
  appConsistentWithinRetention,
  networkMappingConflicts,
  testNetworkIsolated,
  credentialsAreEnvNames,
  recoveryPlanVmsOnce,
  recoveryPlanSingleDirection,
  failoverOptionsMatchType,
];

export function checkRules(input: RuleInput): Diagnostic[] {
  return RULES.flatMap((rule) => rule(input));
}
