// Output (b) of the constructs: the Azure Site Recovery resources for a desired state, as a cdktf
// TerraformStack (vault, one Hyper-V site per host site, policies and their associations, network
// mappings, recovery plans with boot groups and actions in the declared order).
// Only constructs/ imports cdktf and the provider, one resource path at a time: the whole
// provider takes seconds to load.
import { join } from 'node:path';
import { App, TerraformStack, TerraformVariable } from 'cdktf';
import type { Construct } from 'constructs';
import { DataAzurermVirtualNetwork } from '@cdktf/provider-azurerm/lib/data-azurerm-virtual-network/index.js';
import { AzurermProvider } from '@cdktf/provider-azurerm/lib/provider/index.js';
import { RecoveryServicesVault } from '@cdktf/provider-azurerm/lib/recovery-services-vault/index.js';
import { SiteRecoveryFabric } from '@cdktf/provider-azurerm/lib/site-recovery-fabric/index.js';
import { SiteRecoveryHypervNetworkMapping } from '@cdktf/provider-azurerm/lib/site-recovery-hyperv-network-mapping/index.js';
import { SiteRecoveryHypervReplicationPolicyAssociation } from '@cdktf/provider-azurerm/lib/site-recovery-hyperv-replication-policy-association/index.js';
import { SiteRecoveryHypervReplicationPolicy } from '@cdktf/provider-azurerm/lib/site-recovery-hyperv-replication-policy/index.js';
import {
  SiteRecoveryReplicationRecoveryPlan, type SiteRecoveryReplicationRecoveryPlanBootRecoveryGroupPreAction as AsrAction,
} from '@cdktf/provider-azurerm/lib/site-recovery-replication-recovery-plan/index.js';
import { SiteRecoveryServicesVaultHypervSite } from '@cdktf/provider-azurerm/lib/site-recovery-services-vault-hyperv-site/index.js';
import type { Diagnostic } from '../src/model/diagnostics.ts';
import type { DesiredState, RecoveryAction, RecoveryPlan, Site } from '../src/model/desired.ts';
import { ASR_INTERVALS, appConsistentHours, asrDiagnostics, asrFailover, asrPolicies, declaredAt, retentionHours } from './asr-rules.ts';
import { ConstructValidationError, constructDiagnostic } from './errors.ts';

export interface AsrVaultProps {
  /**
   * The Recovery Services vault's name.
   * @default 'drsite-asr-vault'
   */
  readonly name?: string;
  /**
   * Resource group of the vault (and of target networks of host replica sites).
   * @default the azure replica site's resourceGroup; without one, the Terraform variable `resource_group_name`
   */
  readonly resourceGroup?: string;
  /**
   * Azure region of the vault.
   * @default the azure replica site's location; without one, the Terraform variable `location`
   */
  readonly location?: string;
  /**
   * Vault SKU.
   * @default 'Standard'
   */
  readonly sku?: 'Standard' | 'RS0';
  /**
   * ARM ids of the replicated protected items by ProtectedVM name. Hyper-V protected items are
   * created by enabling replication (the ASR provider on the host), not by azurerm.
   * @default `<hyperv site id>/replicationProtectionContainers/<primary site>/replicationProtectedItems/<vm>`
   */
  readonly protectedItemIds?: Readonly<Record<string, string>>;
  /**
   * Where script actions run.
   * @default 'Recovery'
   */
  readonly scriptFabricLocation?: 'Primary' | 'Recovery';
}

export interface AsrStackProps {
  /** The validated desired state (from YAML via loadDesiredState, or from constructs via desiredStateOf). */
  readonly desired: DesiredState;
  /**
   * The vault and where it lives.
   * @default see AsrVaultProps
   */
  readonly vault?: AsrVaultProps;
}

export const DEFAULT_VAULT_NAME = 'drsite-asr-vault';

export class AsrStack extends TerraformStack {
  /** Warnings found while building (errors throw ConstructValidationError instead). */
  readonly warnings: readonly Diagnostic[];

  constructor(scope: Construct, id: string, props: AsrStackProps) {
    super(scope, id);
    const { desired } = props;
    const vaultProps = props.vault ?? {};
    const diagnostics = checkAsr(this.node.path, desired, vaultProps);
    if (diagnostics.some((d) => d.severity === 'error')) throw new ConstructValidationError(diagnostics);
    this.warnings = diagnostics;

    new AzurermProvider(this, 'azurerm', { features: [{}] });
    const placement = vaultPlacement(desired, vaultProps);
    const resourceGroup = placement.resourceGroup ?? new TerraformVariable(this, 'resource_group_name', {
      type: 'string', description: 'Resource group of the Recovery Services vault (no azure Site names one)',
    }).stringValue;
    const location = placement.location ?? new TerraformVariable(this, 'location', {
      type: 'string', description: 'Azure region of the Recovery Services vault (no azure Site names one)',
    }).stringValue;
    const vault = new RecoveryServicesVault(this, 'vault', {
      name: vaultProps.name ?? DEFAULT_VAULT_NAME, resourceGroupName: resourceGroup, location, sku: vaultProps.sku ?? 'Standard',
    });

    const sites = new Map(desired.sites.map((s) => [s.metadata.name, s]));
    const hypervSites = new Map<string, SiteRecoveryServicesVaultHypervSite>();
    const fabrics = new Map<string, SiteRecoveryFabric>();
    for (const s of desired.sites) {
      if (s.spec.type === 'host') {
        hypervSites.set(s.metadata.name, new SiteRecoveryServicesVaultHypervSite(this, `hyperv-site-${s.metadata.name}`, {
          name: s.metadata.name, recoveryVaultId: vault.id,
        }));
      } else {
        fabrics.set(s.metadata.name, new SiteRecoveryFabric(this, `fabric-${s.metadata.name}`, {
          name: s.metadata.name, resourceGroupName: resourceGroup, recoveryVaultName: vault.name, location: s.spec.location!,
        }));
      }
    }

    const policies = new Map<string, SiteRecoveryHypervReplicationPolicy>();
    for (const p of asrPolicies(desired)) {
      policies.set(p.metadata.name, new SiteRecoveryHypervReplicationPolicy(this, `policy-${p.metadata.name}`, {
        name: p.metadata.name,
        recoveryVaultId: vault.id,
        replicationIntervalInSeconds: ASR_INTERVALS[p.spec.frequency ?? '5m'],
        recoveryPointRetentionInHours: retentionHours(p),
        applicationConsistentSnapshotFrequencyInHours: appConsistentHours(p),
      }));
    }

    // A policy applies to a Hyper-V site through an association: one per (primary site, policy) in use.
    const associated = new Set<string>();
    for (const vm of desired.protectedVms) {
      const key = `${vm.spec.primary}-${vm.spec.policy}`;
      const site = hypervSites.get(vm.spec.primary);
      const policy = policies.get(vm.spec.policy);
      if (associated.has(key) || !site || !policy) continue;
      associated.add(key);
      new SiteRecoveryHypervReplicationPolicyAssociation(this, `policy-association-${key}`, { name: key, hypervSiteId: site.id, policyId: policy.id });
    }

    // Target networks are Azure virtual networks, looked up by name in the target's resource group.
    const vnets = new Map<string, DataAzurermVirtualNetwork>();
    const vnet = (site: Site | undefined, network: string) => {
      const rg = site?.spec.type === 'azure' ? site.spec.resourceGroup! : resourceGroup;
      const key = `${site?.spec.type === 'azure' ? site.metadata.name : 'vault'}-${network}`;
      let v = vnets.get(key);
      if (!v) vnets.set(key, (v = new DataAzurermVirtualNetwork(this, `vnet-${key}`, { name: network, resourceGroupName: rg })));
      return v;
    };
    for (const m of desired.networkMappings) {
      if (!hypervSites.has(m.spec.source.site)) continue;
      new SiteRecoveryHypervNetworkMapping(this, `network-mapping-${m.metadata.name}`, {
        name: m.metadata.name,
        recoveryVaultId: vault.id,
        // Hyper-V sites without VMM: the site stands where ASR expects the VMM server's name.
        sourceSystemCenterVirtualMachineManagerName: m.spec.source.site,
        sourceNetworkName: m.spec.source.network,
        targetNetworkId: vnet(sites.get(m.spec.target.site), m.spec.target.network).id,
      });
    }

    const vms = new Map(desired.protectedVms.map((v) => [v.metadata.name, v]));
    for (const plan of desired.recoveryPlans) {
      const first = vms.get(plan.spec.groups[0].vms[0])!;
      const source = hypervSites.get(first.spec.primary)!;
      const targetFabric = fabrics.get(first.spec.replica) ?? hypervSites.get(first.spec.replica)!;
      const itemId = (name: string) => {
        const vm = vms.get(name)!;
        return vaultProps.protectedItemIds?.[name]
          ?? `${hypervSites.get(vm.spec.primary)!.id}/replicationProtectionContainers/${vm.spec.primary}/replicationProtectedItems/${vm.spec.vm}`;
      };
      new SiteRecoveryReplicationRecoveryPlan(this, `recovery-plan-${plan.metadata.name}`, {
        name: plan.metadata.name,
        recoveryVaultId: vault.id,
        sourceRecoveryFabricId: source.id,
        targetRecoveryFabricId: targetFabric.id,
        shutdownRecoveryGroup: {},
        failoverRecoveryGroup: {},
        bootRecoveryGroup: bootGroups(plan, itemId, vaultProps.scriptFabricLocation ?? 'Recovery'),
      });
    }
  }
}

/** Boot groups and their actions, in exactly the declared order (ASR runs them in list order). */
function bootGroups(plan: RecoveryPlan, itemId: (vm: string) => string, scriptFabricLocation: string) {
  return plan.spec.groups.map((g, gi) => {
    const groupName = g.name ?? `group-${gi + 1}`;
    const actions = (when: 'before' | 'after'): AsrAction[] =>
      (g[when] ?? []).map((a, ai) => asrAction(a, a.name ?? `${groupName}-${when}-${ai + 1}`, scriptFabricLocation));
    const [preAction, postAction] = [actions('before'), actions('after')];
    return {
      replicatedProtectedItems: g.vms.map(itemId),
      ...(preAction.length > 0 ? { preAction } : {}),
      ...(postAction.length > 0 ? { postAction } : {}),
    };
  });
}

function asrAction(a: RecoveryAction, name: string, scriptFabricLocation: string): AsrAction {
  const { types, directions } = asrFailover(a);
  const common = { name, failOverTypes: types, failOverDirections: directions };
  if (a.manual) return { ...common, type: 'ManualActionDetails', manualActionInstruction: a.manual.message };
  return { ...common, type: 'ScriptActionDetails', scriptPath: a.script!.path, fabricLocation: scriptFabricLocation };
}

/** The vault's resource group and location: props first, then the azure replica sites when they agree. */
function vaultPlacement(desired: DesiredState, props: AsrVaultProps): { resourceGroup?: string; location?: string } {
  const azure = azureReplicaSites(desired);
  const only = <T>(values: T[]): T | undefined => (new Set(values).size === 1 ? values[0] : undefined);
  return {
    resourceGroup: props.resourceGroup ?? only(azure.map((s) => s.spec.resourceGroup!)),
    location: props.location ?? only(azure.map((s) => s.spec.location!)),
  };
}

function azureReplicaSites(desired: DesiredState): Site[] {
  const replicas = new Set(desired.protectedVms.map((vm) => vm.spec.replica));
  return desired.sites.filter((s) => s.spec.type === 'azure' && replicas.has(s.metadata.name));
}

/**
 * Every problem and warning of synthesising `desired` for Site Recovery, without building
 * anything (synth functions call it before cdktf creates its output directory).
 */
export function checkAsr(stackPath: string, desired: DesiredState, vault: AsrVaultProps = {}): Diagnostic[] {
  return [...asrDiagnostics(desired), ...vaultDiagnostics(stackPath, desired, vault)];
}

function vaultDiagnostics(stackPath: string, desired: DesiredState, props: AsrVaultProps): Diagnostic[] {
  const azure = azureReplicaSites(desired);
  const out: Diagnostic[] = [];
  for (const field of ['resourceGroup', 'location'] as const) {
    const values = [...new Set(azure.map((s) => s.spec[field]))];
    if (props[field] === undefined && values.length > 1) {
      const first = azure[0];
      out.push({
        severity: 'error', summary: `the azure replica sites name different ${field}s (${values.join(', ')})`,
        detail: `one Site Recovery vault serves them all: set AsrVaultProps.${field} on ${stackPath}`,
        path: `spec.${field}`, ...declaredAt(desired, 'Site', first.metadata.name),
      });
    }
  }
  if (props.name !== undefined && !/^[a-zA-Z][-a-zA-Z0-9]{1,49}$/.test(props.name)) {
    out.push(constructDiagnostic(stackPath, `vault name "${props.name}" is not valid`,
      'a Recovery Services vault name has 2-50 letters, digits and hyphens and starts with a letter'));
  }
  return out;
}

export interface SynthAzureSiteRecoveryOptions {
  /** Directory cdktf writes to; the file lands in `<outdir>/stacks/<stackName>/cdk.tf.json`. */
  readonly outdir: string;
  /**
   * The stack's name.
   * @default 'azure-site-recovery'
   */
  readonly stackName?: string;
  /**
   * The vault and where it lives.
   * @default see AsrVaultProps
   */
  readonly vault?: AsrVaultProps;
}

/**
 * Synthesises the Site Recovery Terraform of a desired state (offline: no provider download, no
 * terraform run) and returns the path of cdk.tf.json. Throws ConstructValidationError.
 */
export function synthAzureSiteRecovery(desired: DesiredState, opts: SynthAzureSiteRecoveryOptions): string {
  const stackName = opts.stackName ?? 'azure-site-recovery';
  const diagnostics = checkAsr(stackName, desired, opts.vault);
  // Checked before App exists: App creates its output directory straight away.
  if (diagnostics.some((d) => d.severity === 'error')) throw new ConstructValidationError(diagnostics);
  const app = new App({ outdir: opts.outdir });
  new AsrStack(app, stackName, { desired, vault: opts.vault });
  app.synth();
  return join(opts.outdir, 'stacks', stackName, 'cdk.tf.json');
}
