// The desired state: every declared resource, validated, cross-checked and with defaults applied
// explicitly (src/config/defaults.ts), so nothing downstream re-derives a default.
import type {
  NetworkMapping,
  ProtectedVM,
  RecoveryPlan,
  ReplicationPolicy,
  ReplicationPolicySpec,
  Site,
} from './types.generated.ts';

export type * from './types.generated.ts';

export type Resource = Site | ReplicationPolicy | NetworkMapping | ProtectedVM | RecoveryPlan;
export type Kind = Resource['kind'];
export const KINDS = ['Site', 'ReplicationPolicy', 'NetworkMapping', 'ProtectedVM', 'RecoveryPlan'] as const satisfies readonly Kind[];
export const API_VERSION = 'drsite.dev/v1';

/** Where a resource was declared: diagnostics of later stages point back here. */
export interface SourceRef {
  file: string;
  line: number;
  column: number;
}

export interface DesiredState {
  /** Each list sorted by metadata.name; every optional field that has a default is filled in. */
  sites: Site[];
  policies: ResolvedReplicationPolicy[];
  networkMappings: NetworkMapping[];
  protectedVms: ProtectedVM[];
  recoveryPlans: RecoveryPlan[];
  /** `${kind}/${name}` → where it was declared. */
  sources: Record<string, SourceRef>;
}

export const resourceKey = (r: { kind: Kind; metadata: { name: string } }): string => `${r.kind}/${r.metadata.name}`;

type Filled<T> = { [K in keyof T]-?: Exclude<T[K], undefined> };
type Defaulted<T, K extends keyof T> = Omit<T, K> & Filled<Pick<T, K>>;

/**
 * A policy's spec after the defaults step: every field with a documented default is present, so
 * code downstream reads it instead of restating the default (`?? 50`, `?? '22:00-06:00'`).
 */
export type ResolvedPolicySpec = Omit<ReplicationPolicySpec, 'frequency' | 'recoveryPoints' | 'appConsistentEvery' | 'compression' | 'encryption' | 'initialReplication' | 'resync' | 'multiVmConsistency'> &
  Filled<Pick<ReplicationPolicySpec, 'frequency' | 'recoveryPoints' | 'appConsistentEvery' | 'compression' | 'encryption' | 'multiVmConsistency'>> & {
    initialReplication: Defaulted<NonNullable<ReplicationPolicySpec['initialReplication']>, 'method' | 'startAt'>;
    resync: Defaulted<NonNullable<ReplicationPolicySpec['resync']>, 'thresholdPercent' | 'window' | 'automatic'>;
  };

export type ResolvedReplicationPolicy = Omit<ReplicationPolicy, 'spec'> & { spec: ResolvedPolicySpec };
