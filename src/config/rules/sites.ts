// Rules on sites and what names them: unique names, references that resolve, the direction of
// replication (a replica elsewhere, never on azure as primary, on a Replica server), one
// relationship per VM, and credentials that name environment variables rather than hold secrets.
import type { Diagnostic } from '../../model/diagnostics.ts';
import type { Kind, ProtectedVM, Site } from '../../model/desired.ts';
import { formatPath, type Segment } from '../field-path.ts';
import { didYouMean } from '../suggest.ts';
import { byName, diag, where, type Declared, type Rule } from './support.ts';

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

// --- secrets -------------------------------------------------------------------------------------

/** Environment variable names as shells accept them; anything else is treated as a secret. */
export const ENV_VAR_NAME = /^[A-Z_][A-Z0-9_]*$/;

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
