// Each semantic rule on its own: a valid case that passes and invalid cases that must be reported
// at the offending field. Inputs go through the real parse/schema/defaults steps first.
import { describe, expect, test } from 'vitest';
import * as rules from '../../src/config/rules.ts';
import { RULES, type Rule } from '../../src/config/rules.ts';
import { loadDesiredStateFromSources } from '../../src/config/load.ts';
import { BASE, doc, ruleInput } from './helpers.ts';

const SITE_C = doc('Site', 'site-c', '{type: host, replicaServer: {enabled: true, port: 8445}}');
const AZURE = doc('Site', 'cloud', '{type: azure, storageAccount: drsitereplicas, container: replicas, credentials: {accountKeyEnv: AZURE_KEY}, resourceGroup: dr-rg, location: westeurope}');
const vm = (name: string, extra = '', vmName = name, primary = 'site-a', replica = 'site-b', policy = 'every-5m') =>
  doc('ProtectedVM', name, `{vm: ${vmName}, primary: ${primary}, replica: ${replica}, policy: ${policy}${extra}}`);
const plan = (groups: string[][], failover = '') =>
  doc('RecoveryPlan', 'plan', `{groups: [${groups.map((g) => `{vms: [${g.join(', ')}]}`).join(', ')}]${failover ? `, failover: ${failover}` : ''}}`);
const policy = (name: string, spec: string) => doc('ReplicationPolicy', name, spec);
const mapping = (name: string, from: string, to: string, extra = '') => {
  const [fs, fn] = from.split('/');
  const [ts, tn] = to.split('/');
  return doc('NetworkMapping', name, `{source: {site: ${fs}, network: ${fn}}, target: {site: ${ts}, network: ${tn}}${extra}}`);
};

interface Case {
  reason: string;
  yaml: string;
  /** `path summary-substring` of each expected diagnostic, in order; empty = valid. */
  want: string[];
  /** Line of the first diagnostic, when it matters which document is blamed. */
  line?: number;
  severity?: 'error' | 'warning';
}

const CASES: Record<string, Case[]> = {
  duplicateNames: [
    { reason: 'same name in different kinds is fine', yaml: BASE + doc('ReplicationPolicy', 'site-a', '{}'), want: [] },
    { reason: 'second policy with a taken name', yaml: BASE + policy('every-5m', '{frequency: 15m}'), want: ['metadata.name duplicate ReplicationPolicy name "every-5m"'], line: 18 },
  ],
  danglingReferences: [
    { reason: 'all references resolve', yaml: BASE + vm('web-01') + plan([['web-01']]) + mapping('m', 'site-a/lan', 'site-b/dr'), want: [] },
    { reason: 'unknown replica site and policy', yaml: BASE + vm('web-01', '', 'web-01', 'site-a', 'site-z', 'every-1h'), want: ['spec.replica replica site "site-z" is not declared', 'spec.policy policy "every-1h" is not declared'] },
    { reason: 'unknown extended replica site and policy', yaml: BASE + vm('web-01', ', extendedReplica: {site: site-q, policy: slow}'), want: ['spec.extendedReplica.site extended replica site "site-q"', 'spec.extendedReplica.policy extended replica policy "slow"'] },
    { reason: 'network mapping to an unknown site', yaml: BASE + mapping('m', 'site-x/lan', 'site-b/dr'), want: ['spec.source.site source site "site-x" is not declared'] },
    { reason: 'recovery plan naming an unprotected VM', yaml: BASE + vm('web-01') + plan([['web-01'], ['db-01']]), want: ['spec.groups[1].vms[0] protected VM "db-01" is not declared'] },
  ],
  primaryIsNotReplica: [
    { reason: 'different sites', yaml: BASE + vm('web-01'), want: [] },
    { reason: 'replica equals primary', yaml: BASE + vm('web-01', '', 'web-01', 'site-b', 'site-b'), want: ['spec.replica replica site "site-b" is also the primary site'] },
  ],
  azureIsNotPrimary: [
    { reason: 'azure as replica is fine', yaml: BASE + AZURE + vm('web-01', '', 'web-01', 'site-a', 'cloud'), want: [] },
    { reason: 'azure as primary', yaml: BASE + AZURE + vm('web-01', '', 'web-01', 'cloud', 'site-b'), want: ['spec.primary primary site "cloud" is an azure site'] },
  ],
  replicaSiteAcceptsReplication: [
    { reason: 'replica server enabled', yaml: BASE + vm('web-01'), want: [] },
    { reason: 'azure replica needs no replica server', yaml: BASE + AZURE + vm('web-01', '', 'web-01', 'site-a', 'cloud'), want: [] },
    { reason: 'host replica without replica server', yaml: BASE + vm('web-01', '', 'web-01', 'site-b', 'site-a'), want: ['spec.replica site "site-a" is not a Replica server'] },
    { reason: 'replica server declared but disabled', yaml: BASE + doc('Site', 'site-d', '{type: host, replicaServer: {enabled: false}}') + vm('web-01', '', 'web-01', 'site-a', 'site-d'), want: ['spec.replica site "site-d" is not a Replica server'] },
    { reason: 'extended replica site without replica server', yaml: BASE + doc('Site', 'site-d', '{type: host}') + vm('web-01', ', extendedReplica: {site: site-d, policy: every-5m}'), want: ['spec.extendedReplica.site site "site-d" is not a Replica server'] },
  ],
  embeddedReplicaPortsDistinct: [
    { reason: 'distinct ports', yaml: BASE + SITE_C, want: [] },
    { reason: 'remote sites may share the default port', yaml: doc('Site', 'h1', '{type: host, endpoint: "https://h1.example", replicaServer: {enabled: true}}') + doc('Site', 'h2', '{type: host, endpoint: "https://h2.example", replicaServer: {enabled: true}}'), want: [] },
    { reason: 'two embedded replica servers on the default port', yaml: BASE + doc('Site', 'site-c', '{type: host, replicaServer: {enabled: true}}'), want: ['spec.replicaServer.port port 8443 is already used by embedded site "site-b"'], line: 19 },
  ],
  vmProtectedOnce: [
    { reason: 'same VM name on different primaries', yaml: BASE + SITE_C + vm('web-a') + vm('web-c', '', 'web-a', 'site-c', 'site-b'), want: [] },
    { reason: 'same VM on the same primary twice', yaml: BASE + vm('web-01') + vm('web-01-bis', '', 'web-01'), want: ['spec.vm VM "web-01" on site "site-a" is already protected'], line: 24 },
  ],
  extendedReplicaSite: [
    { reason: 'a third site', yaml: BASE + SITE_C + vm('web-01', ', extendedReplica: {site: site-c, policy: every-5m}'), want: [] },
    { reason: 'extended on the primary', yaml: BASE + vm('web-01', ', extendedReplica: {site: site-a, policy: every-5m}'), want: ['spec.extendedReplica.site extended replica site "site-a" is the primary site'] },
    { reason: 'extended on the replica', yaml: BASE + vm('web-01', ', extendedReplica: {site: site-b, policy: every-5m}'), want: ['spec.extendedReplica.site extended replica site "site-b" is the replica site'] },
    { reason: 'extended from an azure replica', yaml: BASE + SITE_C + AZURE + vm('web-01', ', extendedReplica: {site: site-c, policy: every-5m}', 'web-01', 'site-a', 'cloud'), want: ['spec.extendedReplica replica site "cloud" is an azure site'] },
  ],
  extendedReplicaFrequency: [
    { reason: '5m first hop, 5m extended', yaml: BASE + SITE_C + vm('web-01', ', extendedReplica: {site: site-c, policy: every-5m}'), want: [] },
    { reason: '5m first hop, 15m extended', yaml: BASE + SITE_C + policy('every-15m', '{frequency: 15m}') + vm('web-01', ', extendedReplica: {site: site-c, policy: every-15m}'), want: [] },
    { reason: '30s first hop, 5m extended', yaml: BASE + SITE_C + policy('every-30s', '{frequency: 30s}') + vm('web-01', ', extendedReplica: {site: site-c, policy: every-5m}', 'web-01', 'site-a', 'site-b', 'every-30s'), want: [] },
    { reason: 'default frequency (5m) counts as 5m', yaml: BASE + SITE_C + policy('plain', '{}') + vm('web-01', ', extendedReplica: {site: site-c, policy: plain}'), want: [] },
    { reason: 'extended every 30s', yaml: BASE + SITE_C + policy('every-30s', '{frequency: 30s}') + vm('web-01', ', extendedReplica: {site: site-c, policy: every-30s}', 'web-01', 'site-a', 'site-b', 'every-30s'), want: ['spec.extendedReplica.policy extended replication cannot run every 30s'] },
    { reason: 'extended continuously', yaml: BASE + SITE_C + policy('nonstop', '{frequency: continuous}') + vm('web-01', ', extendedReplica: {site: site-c, policy: nonstop}', 'web-01', 'site-a', 'site-b', 'nonstop'), want: ['spec.extendedReplica.policy extended replication cannot run continuously'] },
    { reason: '15m first hop, 5m extended', yaml: BASE + SITE_C + policy('every-15m', '{frequency: 15m}') + vm('web-01', ', extendedReplica: {site: site-c, policy: every-5m}', 'web-01', 'site-a', 'site-b', 'every-15m'), want: ['spec.extendedReplica.policy extended replication (every 5m) is faster than the first hop (every 15m)'] },
  ],
  replicationGroupNeedsConsistency: [
    { reason: 'policy with multi-VM consistency', yaml: BASE + policy('mvc', '{multiVmConsistency: true}') + vm('web-01', ', replicationGroup: shop', 'web-01', 'site-a', 'site-b', 'mvc'), want: [] },
    { reason: 'policy without it (default false)', yaml: BASE + vm('web-01', ', replicationGroup: shop'), want: ['spec.replicationGroup replication group "shop" needs multi-VM consistency'] },
  ],
  consistencyWithoutGroup: [
    { reason: 'a grouped VM uses the policy', yaml: BASE + policy('mvc', '{multiVmConsistency: true}') + vm('web-01', ', replicationGroup: shop', 'web-01', 'site-a', 'site-b', 'mvc'), want: [] },
    { reason: 'no VM of the policy is grouped', yaml: BASE + policy('mvc', '{multiVmConsistency: true}') + vm('web-01', '', 'web-01', 'site-a', 'site-b', 'mvc'), want: ['spec.multiVmConsistency multiVmConsistency has no effect: no VM of policy "mvc" is in a replication group'], severity: 'warning' },
  ],
  replicationGroupSameSites: [
    { reason: 'members share sites and policy', yaml: BASE + policy('mvc', '{multiVmConsistency: true}') + vm('web-01', ', replicationGroup: shop', 'web-01', 'site-a', 'site-b', 'mvc') + vm('db-01', ', replicationGroup: shop', 'db-01', 'site-a', 'site-b', 'mvc'), want: [] },
    { reason: 'members with different replica sites', yaml: BASE + SITE_C + policy('mvc', '{multiVmConsistency: true}') + vm('web-01', ', replicationGroup: shop', 'web-01', 'site-a', 'site-b', 'mvc') + vm('db-01', ', replicationGroup: shop', 'db-01', 'site-a', 'site-c', 'mvc'), want: ['spec.replicationGroup replication group "shop" mixes sites or policies'] },
  ],
  externalMediaNeedsPath: [
    { reason: 'external media with a path', yaml: policy('p', '{initialReplication: {method: external-media, mediaPath: /mnt/usb}}'), want: [] },
    { reason: 'external media without a path', yaml: policy('p', '{initialReplication: {method: external-media}}'), want: ['spec.initialReplication.method external-media initial replication needs mediaPath'] },
    { reason: 'mediaPath with network replication', yaml: policy('p', '{initialReplication: {mediaPath: /mnt/usb}}'), want: ['spec.initialReplication.mediaPath mediaPath is ignored with method "network"'], severity: 'warning' },
  ],
  appConsistentWithinRetention: [
    { reason: 'crash-consistent only', yaml: policy('p', '{}'), want: [] },
    { reason: 'every 4h with 4 additional points', yaml: policy('p', '{appConsistentEvery: 4h, recoveryPoints: {additional: 4}}'), want: [] },
    { reason: 'every 2h with 6h retention', yaml: policy('p', '{appConsistentEvery: 2h, recoveryPoints: {retention: 6h}}'), want: [] },
    { reason: 'app-consistent points but only the latest kept', yaml: policy('p', '{appConsistentEvery: 1h}'), want: ['spec.appConsistentEvery application-consistent points every 1h may not be kept'], severity: 'warning' },
  ],
  networkMappingConflicts: [
    { reason: 'one network to two different sites', yaml: BASE + SITE_C + mapping('m1', 'site-a/lan', 'site-b/dr') + mapping('m2', 'site-a/lan', 'site-c/dr'), want: [] },
    { reason: 'one network mapped twice to one site', yaml: BASE + mapping('m1', 'site-a/lan', 'site-b/dr') + mapping('m2', 'site-a/lan', 'site-b/other'), want: ['spec.source.network network "lan" on site "site-a" is already mapped to site "site-b"'], line: 24 },
    { reason: 'mapping within one site', yaml: BASE + mapping('m1', 'site-a/lan', 'site-a/dr'), want: ['spec.target.site network mapping stays on site "site-a"'] },
  ],
  testNetworkIsolated: [
    { reason: 'isolated test network', yaml: BASE + mapping('m1', 'site-a/lan', 'site-b/dr', ', testNetwork: dr-test'), want: [] },
    { reason: 'test network is the production network', yaml: BASE + mapping('m1', 'site-a/lan', 'site-b/dr', ', testNetwork: dr'), want: ['spec.testNetwork test network is the production network "dr"'], severity: 'warning' },
  ],
  credentialsAreEnvNames: [
    { reason: 'environment variable names', yaml: AZURE, want: [] },
    { reason: 'an account key pasted inline', yaml: AZURE.replace('AZURE_KEY', '"c2VjcmV0a2V5"'), want: ['spec.credentials.accountKeyEnv spec.credentials.accountKeyEnv must name an environment variable, not hold a secret'] },
    { reason: 'a connection string pasted inline', yaml: AZURE.replace('accountKeyEnv: AZURE_KEY', 'connectionStringEnv: "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=abc=="'), want: ['spec.credentials.connectionStringEnv spec.credentials.connectionStringEnv must name'] },
    { reason: 'a lower-case name is not an env var name', yaml: AZURE.replace('AZURE_KEY', 'azure_key'), want: ['spec.credentials.accountKeyEnv spec.credentials.accountKeyEnv must name'] },
  ],
  recoveryPlanVmsOnce: [
    { reason: 'each VM once', yaml: BASE + vm('web-01') + vm('db-01') + plan([['db-01'], ['web-01']]), want: [] },
    { reason: 'the same VM in two groups', yaml: BASE + vm('web-01') + plan([['web-01'], ['web-01']]), want: ['spec.groups[1].vms[0] VM "web-01" appears twice in the plan'] },
    { reason: 'the same VM twice in one group', yaml: BASE + vm('web-01') + plan([['web-01', 'web-01']]), want: ['spec.groups[0].vms[1] VM "web-01" appears twice in the plan'] },
  ],
  recoveryPlanSingleDirection: [
    { reason: 'one direction', yaml: BASE + vm('web-01') + vm('db-01') + plan([['db-01', 'web-01']]), want: [] },
    { reason: 'a VM going the other way', yaml: BASE.replace('{type: host}', '{type: host, replicaServer: {enabled: true, port: 8444}}') + vm('web-01') + vm('db-01', '', 'db-01', 'site-b', 'site-a') + plan([['web-01'], ['db-01']]), want: ['spec.groups[1].vms[0] VM "db-01" replicates site-b -> site-a, unlike the rest of the plan'] },
  ],
  failoverOptionsMatchType: [
    { reason: 'test failover with cleanup', yaml: BASE + vm('web-01') + plan([['web-01']], '{id: d1, type: test, cleanupTest: true, recoveryPoint: latest-app-consistent}'), want: [] },
    { reason: 'failback with a method', yaml: BASE + vm('web-01') + plan([['web-01']], '{id: d1, type: failback, failbackMethod: full-download, commit: true}'), want: [] },
    { reason: 'unplanned failover to a point in time', yaml: BASE + vm('web-01') + plan([['web-01']], '{id: d1, type: unplanned, recoveryPoint: "2026-11-23T22:00:00Z", commit: true}'), want: [] },
    { reason: 'cleanupTest on a planned failover', yaml: BASE + vm('web-01') + plan([['web-01']], '{id: d1, type: planned, cleanupTest: true}'), want: ['spec.failover.cleanupTest cleanupTest applies to test failover, not "planned"'] },
    { reason: 'failbackMethod on a test failover', yaml: BASE + vm('web-01') + plan([['web-01']], '{id: d1, type: test, failbackMethod: minimize-downtime}'), want: ['spec.failover.failbackMethod failbackMethod applies to failback, not "test"'] },
    { reason: 'commit on a test failover', yaml: BASE + vm('web-01') + plan([['web-01']], '{id: d1, type: test, commit: true}'), want: ['spec.failover.commit a test failover cannot be committed'] },
    { reason: 'commit on cancel', yaml: BASE + vm('web-01') + plan([['web-01']], '{id: d1, type: cancel, commit: true}'), want: ['spec.failover.commit a cancel failover cannot be committed'] },
    { reason: 'recovery point on a planned failover', yaml: BASE + vm('web-01') + plan([['web-01']], '{id: d1, type: planned, recoveryPoint: latest}'), want: ['spec.failover.recoveryPoint recoveryPoint applies to test and unplanned failover, not "planned"'] },
  ],
};

describe.each(Object.keys(CASES))('rule %s', (name) => {
  const rule = (rules as unknown as Record<string, Rule>)[name];

  test('is exported and registered', () => {
    expect(typeof rule).toBe('function');
    expect(RULES).toContain(rule);
  });

  test.each(CASES[name].map((c) => [c.reason, c] as const))('%s', (_reason, c) => {
    const got = rule(ruleInput(c.yaml));
    expect(got.map((d) => `${d.path} ${d.summary}`).map((s, i) => (c.want[i] && s.startsWith(c.want[i]) ? c.want[i] : s))).toEqual(c.want);
    for (const d of got) {
      expect(d.file).toBe('test.yaml');
      expect(d.line).toBeGreaterThanOrEqual(1);
      expect(d.column).toBeGreaterThanOrEqual(1);
      expect(d.detail).not.toBe('');
      expect(d.severity).toBe(c.severity ?? 'error');
    }
    if (c.line !== undefined) expect(got[0].line).toBe(c.line);
  });
});

test('every registered rule has its own cases', () => {
  const named = Object.entries(rules).filter(([, v]) => RULES.includes(v as Rule)).map(([k]) => k).sort();
  expect(named).toEqual(Object.keys(CASES).sort());
});

test('a reference to a declared but invalid resource is not reported as dangling', () => {
  const broken = BASE.replace('{type: host, replicaServer: {enabled: true}}', '{type: host, replicaServer: {enabled: yes-please}}');
  const result = loadDesiredStateFromSources([{ file: 'test.yaml', text: broken + vm('web-01') + vm('db-01', '', 'db-01', 'site-a', 'site-q') }]);
  expect(result.diagnostics.map((d) => `${d.path} ${d.summary}`)).toEqual([
    'spec.replicaServer.enabled wrong type: expected a boolean (true or false), got a string',
    'spec.replica replica site "site-q" is not declared',
  ]);
});

test('the secret in inline credentials is never echoed', () => {
  const secret = 'DefaultEndpointsProtocol=https;AccountName=prod;AccountKey=bm90LWEtcmVhbC1rZXk=';
  const got = rules.credentialsAreEnvNames(ruleInput(AZURE.replace('accountKeyEnv: AZURE_KEY', `connectionStringEnv: "${secret}"`)));
  expect(got).toHaveLength(1);
  const text = JSON.stringify(got);
  expect(text).not.toContain('AccountKey=');
  expect(text).not.toContain('bm90LWEtcmVhbC1rZXk');
});
