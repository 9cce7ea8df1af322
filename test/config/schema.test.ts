// Schema validation without files: one readable error per problem, at the right field path.
import { describe, expect, test } from 'vitest';
import { knownKinds, schemaIssues, validateDocument } from '../../src/config/schema.ts';
import { KINDS } from '../../src/model/desired.ts';

const meta = { apiVersion: 'drsite.dev/v1', metadata: { name: 'x' } };
const site = (spec: object) => ({ ...meta, kind: 'Site', spec });
const policy = (spec: object) => ({ ...meta, kind: 'ReplicationPolicy', spec });
const vm = (spec: object) => ({ ...meta, kind: 'ProtectedVM', spec: { vm: 'web-01', primary: 'a', replica: 'b', policy: 'p', ...spec } });
const plan = (spec: object) => ({ ...meta, kind: 'RecoveryPlan', spec: { groups: [{ vms: ['web-01'] }], ...spec } });
const azure = { type: 'azure', storageAccount: 'acct1', container: 'replicas', credentials: { accountKeyEnv: 'K' }, resourceGroup: 'rg', location: 'westeurope' };

test('every kind of the model has a schema', () => {
  expect(knownKinds().sort()).toEqual([...KINDS].sort());
});

test.each([
  ['minimal host site', site({ type: 'host' })],
  ['azure site', site(azure)],
  ['empty policy (all defaults)', policy({})],
  ['network mapping', { ...meta, kind: 'NetworkMapping', spec: { source: { site: 'a', network: 'n' }, target: { site: 'b', network: 'm' } } }],
  ['protected VM with failover TCP/IP', vm({ failoverNetwork: { adapters: [{ name: 'eth0', ipv4: { address: '10.0.0.5/24', gateway: '10.0.0.1', dns: ['10.0.0.2'] }, ipv6: { address: 'fd00::5/64', gateway: 'fd00::1' } }] } })],
  ['plan with actions and a timed failover', plan({ groups: [{ vms: ['a'], before: [{ manual: { message: 'go' } }], after: [{ name: 's', script: { path: 'x.sh', timeout: '2m' } }] }], failover: { id: 'd-1', type: 'test', recoveryPoint: '2026-11-23T22:00:00Z' } })],
])('valid: %s', (_reason, doc) => {
  expect(validateDocument(doc)).toEqual({ valid: true, errors: [] });
});

interface Case { reason: string; doc: unknown; path: string; message: RegExp }
const CASES: Case[] = [
  { reason: 'not a mapping', doc: 'hello', path: '', message: /document is not a mapping/ },
  { reason: 'null document', doc: null, path: '', message: /document is not a mapping/ },
  { reason: 'missing kind', doc: { apiVersion: 'drsite.dev/v1' }, path: 'kind', message: /missing kind: .*Site/ },
  { reason: 'unknown kind, with a suggestion', doc: { ...meta, kind: 'ProtectedVm' }, path: 'kind', message: /unknown kind "ProtectedVm".*did you mean "ProtectedVM"/ },
  { reason: 'kind of the wrong type', doc: { ...meta, kind: 7 }, path: 'kind', message: /unknown kind \(number\)/ },
  { reason: 'wrong apiVersion', doc: { ...site({ type: 'host' }), apiVersion: 'v1' }, path: 'apiVersion', message: /unsupported apiVersion "v1": expected apiVersion: drsite.dev\/v1/ },
  { reason: 'unknown field names the field and the allowed ones', doc: site({ type: 'host', hypervsor: 'qemu' }), path: 'spec.hypervsor', message: /unknown field "hypervsor": allowed fields in spec: type, endpoint, hypervisor.*did you mean "hypervisor"/ },
  { reason: 'enum lists the allowed values', doc: site({ type: 'hyperv' }), path: 'spec.type', message: /invalid value "hyperv": expected one of: host, azure/ },
  { reason: 'pattern explained in words', doc: { ...site({ type: 'host' }), metadata: { name: 'Site_A' } }, path: 'metadata.name', message: /invalid value "Site_A": expected a DNS label: lower-case letters/ },
  { reason: 'pattern without description gets local words', doc: vm({ vm: '-bad' }), path: 'spec.vm', message: /expected up to 63 letters, digits/ },
  { reason: 'required names the missing field at the parent', doc: site({ type: 'host', replicaServer: {} }), path: 'spec.replicaServer.enabled', message: /missing required field "enabled"/ },
  { reason: 'missing spec', doc: { ...meta, kind: 'Site' }, path: 'spec', message: /missing required field "spec"/ },
  { reason: 'type', doc: site({ type: 'host', replicaServer: { enabled: 'yes' } }), path: 'spec.replicaServer.enabled', message: /wrong type: expected a boolean \(true or false\), got a string/ },
  { reason: 'range', doc: policy({ resync: { thresholdPercent: 0 } }), path: 'spec.resync.thresholdPercent', message: /value 0 is out of range: .* must be >= 1/ },
  { reason: 'format', doc: vm({ failoverNetwork: { adapters: [{ name: 'e', ipv6: { address: 'fd00::1/64', gateway: 'nope' } }] } }), path: 'spec.failoverNetwork.adapters[0].ipv6.gateway', message: /expected an IPv6 address/ },
  { reason: 'empty list', doc: plan({ groups: [] }), path: 'spec.groups', message: /empty list: spec.groups must have at least 1 item/ },
  { reason: 'duplicate list item', doc: vm({ disks: { exclude: ['swap', 'swap'] } }), path: 'spec.disks.exclude[1]', message: /duplicate item "swap"/ },
  { reason: 'exclusive fields', doc: policy({ recoveryPoints: { additional: 1, retention: '2h' } }), path: 'spec.recoveryPoints.retention', message: /"additional" and "retention" cannot be combined/ },
  { reason: 'anyOf collapsed into one message', doc: policy({ initialReplication: { startAt: 'tomorrow' } }), path: 'spec.initialReplication.startAt', message: /invalid value "tomorrow": expected immediately, or an RFC 3339 time/ },
  { reason: 'oneOf: neither branch', doc: plan({ groups: [{ vms: ['a'], after: [{ name: 'n' }] }] }), path: 'spec.groups[0].after[0]', message: /needs one of "script" or "manual"/ },
  { reason: 'oneOf: both branches', doc: plan({ groups: [{ vms: ['a'], after: [{ script: { path: 'p' }, manual: { message: 'm' } }] }] }), path: 'spec.groups[0].after[0].manual', message: /"script" and "manual" cannot be combined/ },
  { reason: 'if/then: forbidden field names the condition', doc: site({ ...azure, hypervisor: 'files' }), path: 'spec.hypervisor', message: /field "hypervisor" is not allowed when type is "azure"/ },
  { reason: 'if/then: required field names the condition', doc: site({ type: 'azure', storageAccount: 'acct1', container: 'replicas', credentials: { accountKeyEnv: 'K' }, resourceGroup: 'rg' }), path: 'spec.location', message: /missing required field "location": spec must have "location"; required when type is "azure"/ },
  { reason: 'if/else: azure-only field on a host', doc: site({ type: 'host', container: 'replicas' }), path: 'spec.container', message: /field "container" is only allowed when type is "azure"/ },
];

describe('one clear error per problem', () => {
  test.each(CASES.map((c) => [c.reason, c] as const))('%s', (_reason, c) => {
    const r = validateDocument(c.doc);
    expect(r.valid).toBe(false);
    expect(r.errors, JSON.stringify(r.errors)).toHaveLength(1);
    expect(r.errors[0].path).toBe(c.path);
    expect(r.errors[0].message).toMatch(c.message);
  });
});

test('all problems of a document are reported at once', () => {
  const r = validateDocument(site({ type: 'hyperv', port: 1, replicaServer: { enabled: 1 } }));
  expect(r.errors.map((e) => e.path)).toEqual(['spec.port', 'spec.type', 'spec.replicaServer.enabled']);
});

test('a value of the wrong type is not also reported for its branches', () => {
  const r = validateDocument(plan({ groups: [{ vms: ['a'], before: ['run.sh'] }] }));
  expect(r.errors).toEqual([{ path: 'spec.groups[0].before[0]', message: 'wrong type: expected a mapping, got a string: spec.groups[0].before[0] must be a mapping' }]);
});

test('issues carry segments for positioning: index segments are numbers', () => {
  const [issue] = schemaIssues(plan({ groups: [{ vms: ['a'] }, { vms: ['Bad'] }] }));
  expect(issue.path).toEqual(['spec', 'groups', 1, 'vms', 0]);
  expect(issue.at).toEqual(issue.path);
});

test('a numeric map key stays a key, not an index', () => {
  const [issue] = schemaIssues({ ...site({ type: 'host' }), metadata: { name: 'x', labels: { 0: 5 } } });
  expect(issue.path).toEqual(['metadata', 'labels', '0']);
});

test('long values are shortened in messages', () => {
  const r = validateDocument(site({ type: 'x'.repeat(500) }));
  expect(r.errors[0].message.length).toBeLessThan(200);
});
