// The constructs' public API: drsite resources as CDK constructs, their manifests, and the Azure
// Site Recovery and failover-to-Azure Terraform synthesised through cdktf.
export { ConstructValidationError, describeDiagnostic } from './errors.ts';
export { DrResource, type Ref, type ResourceMetaProps } from './dr-resource.ts';
export { Site, type SiteProps } from './site.ts';
export { ReplicationPolicy, type ReplicationPolicyProps } from './replication-policy.ts';
export { NetworkMapping, type NetworkMappingProps, type SiteNetworkProps } from './network-mapping.ts';
export { ProtectedVm, type ProtectedVmProps, type ExtendedReplicaProps } from './protected-vm.ts';
export { RecoveryPlan, type RecoveryPlanProps, type RecoveryGroupProps, type RecoveryActionProps } from './recovery-plan.ts';
export { validateTree, desiredStateOf, synthManifests, manifestsOf, manifestsToYaml } from './manifests.ts';
export { AsrStack, synthAzureSiteRecovery, checkAsr, DEFAULT_VAULT_NAME, type AsrStackProps, type AsrVaultProps, type SynthAzureSiteRecoveryOptions } from './asr-stack.ts';
export { asrDiagnostics, ASR_INTERVALS } from './asr-rules.ts';
export {
  AzureFailoverStack, synthAzureFailover, type AzureFailoverDisk, type AzureFailoverOptions, type AzureRecoveryPoint,
} from './failover-stack.ts';
