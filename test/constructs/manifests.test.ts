// The constructs front end produces the documents the YAML front end produces, and rejects bad
// props and bad trees with the construct path in front of every message.
import { Construct } from 'constructs';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import {
  desiredStateOf, manifestsToYaml, NetworkMapping, ProtectedVm, RecoveryPlan, ReplicationPolicy, Site,
  synthManifests, validateTree,
} from '../../constructs/index.ts';
import { quickstart } from '../../examples/cdk/quickstart.ts';
import { drApp, yamlQuickstart, validationError } from './helpers.ts';


/** Two host sites, a policy and one VM: the smallest valid tree to break one thing at a time. */
function base(scope = drApp()) {
  const a = new Site(scope, 'site-a', { type: 'host' });
  const b = new Site(scope, 'site-b', { type: 'host', replicaServer: { enabled: true } });
  const policy = new ReplicationPolicy(scope, 'every-5m', { frequency: '5m' });
  return { scope, a, b, policy };
}

describe('CDK quickstart vs YAML quickstart', () => {
  it('gives the same desired state, compared as data after normalisation', () => {
    const dr = drApp();
    quickstart(dr);
    const { sources: cdkSources, ...cdk } = desiredStateOf(dr);
    const { sources: _yamlSources, ...yaml } = yamlQuickstart();
    expect(cdk).toEqual(yaml);
    expect(cdk.protectedVms.map((v) => v.metadata.name)).toEqual(['db-01', 'web-01']);
    // Where each resource came from is its construct path.
    expect(cdkSources['ProtectedVM/web-01']).toEqual({ file: 'DrApp/web-01', line: 0, column: 0 });
  });

  it('synthManifests returns the documents in kind and name order, and they reload as the same YAML', () => {
    const dr = drApp();
    quickstart(dr);
    const docs = synthManifests(dr);
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual([
      'Site/site-a', 'Site/site-b', 'ReplicationPolicy/every-30s', 'NetworkMapping/lan-a-to-b', 'NetworkMapping/lan-b-to-a',
      'ProtectedVM/db-01', 'ProtectedVM/web-01', 'RecoveryPlan/quickstart',
    ]);
    const yaml = yamlQuickstart();
    expect(docs).toEqual([...yaml.sites, ...yaml.policies, ...yaml.networkMappings, ...yaml.protectedVms, ...yaml.recoveryPlans]);
    const reparsed = parseAllDocuments(manifestsToYaml(docs)).map((d) => d.toJS());
    expect(reparsed).toEqual(docs);
  });

  it('accepts names as well as constructs for references', () => {
    const { scope } = base();
    new ProtectedVm(scope, 'web-01', { primary: 'site-a', replica: 'site-b', policy: 'every-5m' });
    expect(synthManifests(scope).find((d) => d.kind === 'ProtectedVM')?.spec).toMatchObject({ vm: 'web-01', primary: 'site-a', policy: 'every-5m' });
  });
});

describe('validation in the constructor (schema)', () => {
  it('rejects recovery points out of range with the construct path', () => {
    const e = validationError(() => new ReplicationPolicy(drApp(), 'gold', { recoveryPoints: { additional: 25 } }));
    expect(e.message).toMatch(/^DrApp\/gold: /);
    expect(e.message).toContain('spec.recoveryPoints.additional');
    expect(e.code).toBe('invalid-argument');
  });

  it('rejects a retention longer than 24h and both retention forms at once', () => {
    expect(validationError(() => new ReplicationPolicy(drApp(), 'p', { recoveryPoints: { retention: '25h' } })).message).toMatch(/^DrApp\/p: .*retention/);
    expect(validationError(() => new ReplicationPolicy(drApp(), 'p', { recoveryPoints: { additional: 2, retention: '2h' } })).message).toMatch(/^DrApp\/p: /);
  });

  it('rejects a name that is not a DNS label and an azure site without its fields', () => {
    expect(validationError(() => new Site(drApp(), 'Site_A', { type: 'host' })).message).toMatch(/^DrApp\/Site_A: .*metadata\.name/);
    const e = validationError(() => new Site(drApp(), 'cloud', { type: 'azure' }));
    expect(e.diagnostics.every((d) => d.file === 'DrApp/cloud')).toBe(true);
    expect(e.message).toContain('storageAccount');
  });
});

describe('validation of the whole tree (the config rules)', () => {
  it('names the construct of a dangling policy reference', () => {
    const { scope, a, b } = base();
    new ProtectedVm(scope, 'web-01', { primary: a, replica: b, policy: 'gold' });
    const e = validationError(() => desiredStateOf(scope));
    expect(e.message).toMatch(/^DrApp\/web-01: policy "gold" is not declared \(at spec\.policy\)/);
    expect(String(e)).toContain('Error: DrApp/web-01: policy "gold" is not declared');
  });

  it('rejects a VM in two groups of a plan', () => {
    const { scope, a, b, policy } = base();
    const web = new ProtectedVm(scope, 'web-01', { primary: a, replica: b, policy });
    const db = new ProtectedVm(scope, 'db-01', { primary: a, replica: b, policy });
    new RecoveryPlan(scope, 'failover-all', { groups: [{ vms: [db, web] }, { vms: [web] }] });
    const e = validationError(() => synthManifests(scope));
    expect(e.message).toContain('DrApp/failover-all: VM "web-01" appears twice in the plan (at spec.groups[1].vms[0])');
  });

  it('reports every error of the tree at once, each with its own path', () => {
    const { scope, a } = base();
    new ProtectedVm(scope, 'web-01', { primary: a, replica: 'site-z', policy: 'every-5m' });
    new NetworkMapping(scope, 'loop', { source: { site: a, network: 'lan' }, target: { site: a, network: 'lan2' } });
    const result = validateTree(scope);
    expect(result.ok).toBe(false);
    const errors = result.diagnostics.filter((d) => d.severity === 'error').map((d) => `${d.file} ${d.path}`);
    expect(errors).toEqual(expect.arrayContaining(['DrApp/web-01 spec.replica', 'DrApp/loop spec.target.site']));
  });

  it('a construct in a nested scope is named by its full path', () => {
    const { scope, a, b, policy } = base();
    const team = new Construct(scope, 'team-web');
    new ProtectedVm(team, 'web-01', { primary: a, replica: b, policy, extendedReplica: { site: 'site-c', policy } });
    expect(validationError(() => desiredStateOf(scope)).message).toMatch(/^DrApp\/team-web\/web-01: extended replica site "site-c" is not declared/m);
  });
});
