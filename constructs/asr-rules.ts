// What Azure Site Recovery's Hyper-V scenario accepts, checked on the desired state before any
// Terraform is built, and the unit conversions from drsite's model to the azurerm attributes.
// Pure: no cdktf here, so the rules are cheap to test and to reuse.
import type { Diagnostic } from '../src/model/diagnostics.ts';
import type { DesiredState, RecoveryAction, ReplicationPolicy } from '../src/model/desired.ts';

/** ASR Hyper-V's replication_interval_in_seconds accepts these two values only. */
export const ASR_INTERVALS: Readonly<Record<string, number>> = { '30s': 30, '5m': 300 };
export const ASR_MAX_RETENTION_HOURS = 24;
export const ASR_MAX_APP_CONSISTENT_HOURS = 12;

const hours = (duration: string | undefined): number => (duration === undefined || duration === '0' ? 0 : Number.parseInt(duration, 10));

/** recovery_point_retention_in_hours: `additional` hourly points cover that many hours. */
export function retentionHours(policy: ReplicationPolicy): number {
  const rp = policy.spec.recoveryPoints ?? {};
  return rp.retention !== undefined ? hours(rp.retention) : (rp.additional ?? 0);
}

/** application_consistent_snapshot_frequency_in_hours (0 = crash-consistent only). */
export const appConsistentHours = (policy: ReplicationPolicy): number => hours(policy.spec.appConsistentEvery);

/** ASR's fail_over_types and fail_over_directions for an action's drsite failover types. */
export function asrFailover(action: RecoveryAction): { types: string[]; directions: string[] } {
  const ours = new Set(action.failoverTypes ?? ['test', 'planned', 'unplanned', 'failback']);
  // ASR has no failback type: a failback is a planned failover in the other direction.
  const types = [
    ours.has('test') ? 'TestFailover' : undefined,
    ours.has('planned') || ours.has('failback') ? 'PlannedFailover' : undefined,
    ours.has('unplanned') ? 'UnplannedFailover' : undefined,
  ].filter((t): t is string => t !== undefined);
  const directions = [
    ours.has('test') || ours.has('planned') || ours.has('unplanned') ? 'PrimaryToRecovery' : undefined,
    ours.has('failback') ? 'RecoveryToPrimary' : undefined,
  ].filter((d): d is string => d !== undefined);
  return { types, directions };
}

/** Where a resource was declared: file:line:column from YAML, a construct path (line 0) from the constructs. */
export function declaredAt(desired: DesiredState, kind: string, name: string): { file: string; line: number; column: number } {
  return desired.sources[`${kind}/${name}`] ?? { file: `${kind}/${name}`, line: 0, column: 0 };
}

/** Policies that ASR replicates with: every policy except those used only for extended replication. */
export function asrPolicies(desired: DesiredState): ReplicationPolicy[] {
  const firstHop = new Set(desired.protectedVms.map((vm) => vm.spec.policy));
  const extendedOnly = new Set(desired.protectedVms.map((vm) => vm.spec.extendedReplica?.policy).filter((p) => p !== undefined && !firstHop.has(p)));
  return desired.policies.filter((p) => !extendedOnly.has(p.metadata.name));
}

/** Everything ASR cannot express, as diagnostics located where the resource was declared. */
export function asrDiagnostics(desired: DesiredState): Diagnostic[] {
  const out: Diagnostic[] = [];
  const at = (kind: string, name: string, path: string, summary: string, detail: string, severity: Diagnostic['severity'] = 'error') =>
    out.push({ severity, summary, detail, path, ...declaredAt(desired, kind, name) });

  for (const p of asrPolicies(desired)) {
    const name = p.metadata.name;
    const frequency = p.spec.frequency ?? '5m';
    if (ASR_INTERVALS[frequency] === undefined) {
      at('ReplicationPolicy', name, 'spec.frequency', `policy "${name}" replicates ${frequency === 'continuous' ? 'continuously' : `every ${frequency}`}, which Site Recovery does not support`,
        'Azure Site Recovery for Hyper-V replicates every 30 s or every 5 min (replication_interval_in_seconds 30 or 300): set frequency to 30s or 5m');
    }
    const retention = retentionHours(p);
    if (retention < 0 || retention > ASR_MAX_RETENTION_HOURS) {
      at('ReplicationPolicy', name, 'spec.recoveryPoints', `policy "${name}" keeps recovery points for ${retention} h`,
        `Site Recovery keeps recovery points for 0 to ${ASR_MAX_RETENTION_HOURS} hours`);
    }
    const app = appConsistentHours(p);
    if (app < 0 || app > ASR_MAX_APP_CONSISTENT_HOURS) {
      at('ReplicationPolicy', name, 'spec.appConsistentEvery', `policy "${name}" takes application-consistent points every ${app} h`,
        `Site Recovery takes application-consistent snapshots every 0 to ${ASR_MAX_APP_CONSISTENT_HOURS} hours`);
    }
  }
  for (const vm of desired.protectedVms) {
    if (vm.spec.extendedReplica) {
      at('ProtectedVM', vm.metadata.name, 'spec.extendedReplica', 'extended replication is not part of the Site Recovery output',
        'Azure Site Recovery for Hyper-V has no extended replication; only the first hop is synthesised', 'warning');
    }
  }
  const sites = new Map(desired.sites.map((s) => [s.metadata.name, s]));
  for (const m of desired.networkMappings) {
    if (sites.get(m.spec.source.site)?.spec.type === 'azure') {
      at('NetworkMapping', m.metadata.name, 'spec.source.site', 'network mapping from an azure site is not part of the Site Recovery output',
        'a Hyper-V network mapping maps a network of a Hyper-V site to an Azure virtual network; failback networks are chosen at failback', 'warning');
    }
  }
  for (const plan of desired.recoveryPlans) {
    plan.spec.groups.forEach((g, gi) => (['before', 'after'] as const).forEach((when) => (g[when] ?? []).forEach((a, ai) => {
      if (a.script && (a.script.args ?? []).length > 0) {
        at('RecoveryPlan', plan.metadata.name, `spec.groups[${gi}].${when}[${ai}].script.args`, 'script arguments are not part of the Site Recovery output',
          'a Site Recovery script action names a script path only; the script gets no arguments there', 'warning');
      }
    })));
  }
  return out;
}

