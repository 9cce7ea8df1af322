// Azure Site Recovery synthesis: real cdktf synth into a temp directory, then assertions on the
// resources' attributes in cdk.tf.json (the Testing.synth() style of cdktf's own tests).
import { afterAll, describe, expect, it } from 'vitest';
import {
  desiredStateOf, ProtectedVm, RecoveryPlan, ReplicationPolicy, Site, synthAzureSiteRecovery,
} from '../../constructs/index.ts';
import { loadDesiredStateFromSources } from '../../src/config/index.ts';
import { quickstart } from '../../examples/cdk/quickstart.ts';
import { byName, drApp, readTerraform, ref, tempDirs, validationError } from './helpers.ts';

const tmp = tempDirs();
afterAll(() => tmp.cleanup());

const HYPERV_SITE = 'azurerm_site_recovery_services_vault_hyperv_site';
const POLICY = 'azurerm_site_recovery_hyperv_replication_policy';
const ASSOCIATION = 'azurerm_site_recovery_hyperv_replication_policy_association';
const NETWORK_MAPPING = 'azurerm_site_recovery_hyperv_network_mapping';
const PLAN = 'azurerm_site_recovery_replication_recovery_plan';
const VAULT = 'azurerm_recovery_services_vault';


describe('the quickstart as Site Recovery Terraform', async () => {
  const dr = drApp();
  quickstart(dr);
  const file = synthAzureSiteRecovery(desiredStateOf(dr), {
    outdir: await tmp.make(), vault: { name: 'qs-vault', resourceGroup: 'drsite-rg', location: 'westeurope' },
  });
  const tf = readTerraform(file);

  it('has one vault, one Hyper-V site per host site, and nothing else of the fabric kind', () => {
    expect(file.endsWith('stacks/azure-site-recovery/cdk.tf.json')).toBe(true);
    expect(Object.values(tf.resource[VAULT])).toEqual([expect.objectContaining({ name: 'qs-vault', resource_group_name: 'drsite-rg', location: 'westeurope', sku: 'Standard' })]);
    const vaultId = ref(VAULT, byName(tf, VAULT, 'qs-vault').id);
    expect(Object.values(tf.resource[HYPERV_SITE]).map((s) => [s.name, s.recovery_vault_id])).toEqual([['site-a', vaultId], ['site-b', vaultId]]);
    expect(tf.resource.azurerm_site_recovery_fabric).toBeUndefined();
    expect(tf.variable).toBeUndefined();
  });

  it('converts the policy: interval 30 s, retention 4 h from additional: 4 (the attribute is in hours), crash-consistent', () => {
    const p = byName(tf, POLICY, 'every-30s').attrs;
    expect(p.replication_interval_in_seconds).toBe(30);
    expect(p.recovery_point_retention_in_hours).toBe(4);
    expect(p.application_consistent_snapshot_frequency_in_hours).toBe(0);
    expect(p.recovery_point_retention_in_minutes).toBeUndefined();
  });

  it('associates the policy with the primary site only', () => {
    const associations = Object.values(tf.resource[ASSOCIATION]);
    expect(associations).toHaveLength(1);
    expect(associations[0]).toMatchObject({
      name: 'site-a-every-30s',
      hyperv_site_id: ref(HYPERV_SITE, byName(tf, HYPERV_SITE, 'site-a').id),
      policy_id: ref(POLICY, byName(tf, POLICY, 'every-30s').id),
    });
  });

  it('maps the source network by name and the target to an Azure virtual network looked up by name', () => {
    const m = byName(tf, NETWORK_MAPPING, 'lan-a-to-b').attrs;
    expect(m.source_system_center_virtual_machine_manager_name).toBe('site-a');
    expect(m.source_network_name).toBe('lan');
    const vnetId = /^\$\{data\.azurerm_virtual_network\.([^.]+)\.id\}$/.exec(m.target_network_id)?.[1];
    expect(tf.data?.azurerm_virtual_network[vnetId!]).toMatchObject({ name: 'lan-dr', resource_group_name: 'drsite-rg' });
    expect(byName(tf, NETWORK_MAPPING, 'lan-b-to-a').attrs.source_network_name).toBe('lan-dr');
  });

  it('keeps the plan groups in declared order with each script action in its group and position', () => {
    const plan = byName(tf, PLAN, 'quickstart').attrs;
    expect(plan.source_recovery_fabric_id).toBe(ref(HYPERV_SITE, byName(tf, HYPERV_SITE, 'site-a').id));
    expect(plan.shutdown_recovery_group).toEqual({});
    expect(plan.failover_recovery_group).toEqual({});
    const groups = plan.boot_recovery_group as { replicated_protected_items: string[]; pre_action?: any[]; post_action?: any[] }[];
    expect(groups.map((g) => g.replicated_protected_items.map((i) => i.split('/').at(-1)))).toEqual([['db-01'], ['web-01']]);
    expect(groups[0].pre_action).toBeUndefined();
    expect(groups[0].post_action).toEqual([{
      name: 'record-database-up', type: 'ScriptActionDetails', script_path: 'scripts/notify.sh', fabric_location: 'Recovery',
      fail_over_types: ['TestFailover', 'PlannedFailover', 'UnplannedFailover'], fail_over_directions: ['PrimaryToRecovery', 'RecoveryToPrimary'],
    }]);
    expect(groups[1].pre_action?.map((a) => a.name)).toEqual(['record-web-starting']);
    expect(groups[1].post_action?.map((a) => a.name)).toEqual(['record-web-up']);
  });
});

describe('recovery plan order and actions', () => {
  it('preserves 3 groups and their actions in a deliberately non-alphabetical order', async () => {
    const dr = drApp();
    const a = new Site(dr, 'site-a', { type: 'host' });
    const cloud = new Site(dr, 'cloud', {
      type: 'azure', storageAccount: 'drsitereplicas', container: 'replicas', credentials: { connectionStringEnv: 'AZURE_CONN' },
      resourceGroup: 'dr-rg', location: 'northeurope', network: { virtualNetwork: 'dr-vnet' },
    });
    const policy = new ReplicationPolicy(dr, 'five', { frequency: '5m', recoveryPoints: { retention: '12h' }, appConsistentEvery: '2h' });
    const vm = (n: string) => new ProtectedVm(dr, n, { primary: a, replica: cloud, policy });
    const [zeta, alpha, mid, beta] = ['zeta', 'alpha', 'mid', 'beta'].map(vm);
    new RecoveryPlan(dr, 'ordered', {
      groups: [
        { name: 'zz-last-name', vms: [zeta, alpha], before: [{ name: 'z-step', manual: { message: 'Stop the load balancer' } }, { name: 'a-step', script: { path: '/opt/y.sh' } }] },
        { name: 'aa-first-name', vms: [mid], after: [{ script: { path: '/opt/x.sh' }, failoverTypes: ['failback'] }, { name: 'b-step', manual: { message: 'Check the app' }, failoverTypes: ['test'] }] },
        { vms: [beta], before: [{ name: 'c-step', script: { path: '/opt/c.sh' }, failoverTypes: ['planned', 'unplanned'] }] },
      ],
    });
    const tf = readTerraform(synthAzureSiteRecovery(desiredStateOf(dr), { outdir: await tmp.make(), stackName: 'ordered' }));

    // The vault lives where the azure replica site is.
    expect(Object.values(tf.resource[VAULT])[0]).toMatchObject({ name: 'drsite-asr-vault', resource_group_name: 'dr-rg', location: 'northeurope' });
    const fabric = Object.entries(tf.resource.azurerm_site_recovery_fabric);
    expect(fabric.map(([, f]) => [f.name, f.location])).toEqual([['cloud', 'northeurope']]);
    expect(byName(tf, POLICY, 'five').attrs).toMatchObject({ replication_interval_in_seconds: 300, recovery_point_retention_in_hours: 12, application_consistent_snapshot_frequency_in_hours: 2 });

    const plan = byName(tf, PLAN, 'ordered').attrs;
    expect(plan.target_recovery_fabric_id).toBe(ref('azurerm_site_recovery_fabric', fabric[0][0]));
    const groups = plan.boot_recovery_group as { replicated_protected_items: string[]; pre_action?: any[]; post_action?: any[] }[];
    expect(groups.map((g) => g.replicated_protected_items.map((i) => i.split('/').at(-1)))).toEqual([['zeta', 'alpha'], ['mid'], ['beta']]);
    expect(groups[0].pre_action).toEqual([
      { name: 'z-step', type: 'ManualActionDetails', manual_action_instruction: 'Stop the load balancer', fail_over_types: ['TestFailover', 'PlannedFailover', 'UnplannedFailover'], fail_over_directions: ['PrimaryToRecovery', 'RecoveryToPrimary'] },
      expect.objectContaining({ name: 'a-step', type: 'ScriptActionDetails', script_path: '/opt/y.sh', fabric_location: 'Recovery' }),
    ]);
    expect(groups[1].post_action).toEqual([
      expect.objectContaining({ name: 'aa-first-name-after-1', script_path: '/opt/x.sh', fail_over_types: ['PlannedFailover'], fail_over_directions: ['RecoveryToPrimary'] }),
      expect.objectContaining({ name: 'b-step', type: 'ManualActionDetails', fail_over_types: ['TestFailover'], fail_over_directions: ['PrimaryToRecovery'] }),
    ]);
    expect(groups[2].pre_action).toEqual([
      expect.objectContaining({ name: 'c-step', fail_over_types: ['PlannedFailover', 'UnplannedFailover'], fail_over_directions: ['PrimaryToRecovery'] }),
    ]);
    expect(groups[2].post_action).toBeUndefined();
  });

  it('without an azure site or vault props, the vault placement becomes Terraform variables', async () => {
    const dr = drApp();
    quickstart(dr);
    const tf = readTerraform(synthAzureSiteRecovery(desiredStateOf(dr), { outdir: await tmp.make() }));
    expect(Object.keys(tf.variable ?? {}).sort()).toEqual(['location', 'resource_group_name']);
    expect(Object.values(tf.resource[VAULT])[0]).toMatchObject({ resource_group_name: '${var.resource_group_name}', location: '${var.location}' });
  });
});

describe('combinations Site Recovery rejects', () => {
  it('a 15m policy, naming the construct path and the two supported intervals', async () => {
    const dr = drApp();
    const a = new Site(dr, 'site-a', { type: 'host' });
    const b = new Site(dr, 'site-b', { type: 'host', replicaServer: { enabled: true } });
    const slow = new ReplicationPolicy(dr, 'every-15m', { frequency: '15m' });
    new ProtectedVm(dr, 'web-01', { primary: a, replica: b, policy: slow });
    const desired = desiredStateOf(dr); // valid for drsite's own engine
    const outdir = await tmp.make();
    const e = validationError(() => synthAzureSiteRecovery(desired, { outdir }));
    expect(e.message).toMatch(/^DrApp\/every-15m: policy "every-15m" replicates every 15m, which Site Recovery does not support \(at spec\.frequency\)/);
    expect(e.message).toContain('30 s or every 5 min');
  });

  it('the same rule on YAML input names file, line and column', () => {
    const text = [
      'apiVersion: drsite.dev/v1', 'kind: Site', 'metadata: {name: site-a}', 'spec: {type: host}', '---',
      'apiVersion: drsite.dev/v1', 'kind: Site', 'metadata: {name: site-b}', 'spec: {type: host, replicaServer: {enabled: true}}', '---',
      'apiVersion: drsite.dev/v1', 'kind: ReplicationPolicy', 'metadata: {name: slow}', 'spec: {frequency: 15m}', '---',
      'apiVersion: drsite.dev/v1', 'kind: ProtectedVM', 'metadata: {name: web-01}', 'spec: {vm: web-01, primary: site-a, replica: site-b, policy: slow}',
    ].join('\n');
    const loaded = loadDesiredStateFromSources([{ file: 'dr.yaml', text }]);
    if (!loaded.ok) throw new Error('fixture must be valid');
    const e = validationError(() => synthAzureSiteRecovery(loaded.state, { outdir: '/nonexistent-never-written' }));
    expect(e.diagnostics.filter((d) => d.severity === 'error')).toEqual([expect.objectContaining({ file: 'dr.yaml', line: 11, path: 'spec.frequency' })]);
    expect(e.message).toMatch(/^dr\.yaml:11:1: policy "slow" replicates every 15m/);
  });

  it('azure replica sites in different resource groups without vault props', () => {
    const dr = drApp();
    const a = new Site(dr, 'site-a', { type: 'host' });
    const azure = (n: string, rg: string) => new Site(dr, n, { type: 'azure', storageAccount: `${n}acct`, container: 'replicas', credentials: { connectionStringEnv: 'X' }, resourceGroup: rg, location: 'westeurope' });
    const policy = new ReplicationPolicy(dr, 'p', { frequency: '30s' });
    new ProtectedVm(dr, 'vm1', { primary: a, replica: azure('east', 'rg-1'), policy });
    new ProtectedVm(dr, 'vm2', { primary: a, replica: azure('west', 'rg-2'), policy });
    const e = validationError(() => synthAzureSiteRecovery(desiredStateOf(dr), { outdir: '/nonexistent-never-written' }));
    expect(e.message).toMatch(/^DrApp\/east: the azure replica sites name different resourceGroups \(rg-1, rg-2\)/);
  });
});
