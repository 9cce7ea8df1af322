// The observed state: what the sites report plus what the vault remembers, as one plain-JSON value
// (the vault stores it as is). Observing fills it and changes nothing; the planner only reads it.
import type { ReplicationPolicySpec } from './types.generated.ts';

/** Replication states of Hyper-V Replica / Site Recovery (DESIGN.md section 3). */
export const REPLICATION_STATES = [
  'Disabled',
  'ReadyForInitialReplication',
  'InitialReplicationInProgress',
  'WaitingForInitialReplicationImport',
  'Replicating',
  'Suspended',
  'ResynchronizationRequired',
  'Resynchronizing',
  'PreparedForPlannedFailover',
  'FailoverWaitingCompletion',
  'FailedOver',
  'Critical',
] as const;
export type ReplicationState = (typeof REPLICATION_STATES)[number];

export const HEALTHS = ['Normal', 'Warning', 'Critical'] as const;
export type Health = (typeof HEALTHS)[number];

export type ReplicationRole = 'Primary' | 'Replica' | 'ExtendedReplica';

/** The policy a relationship (or its extended hop) actually runs with: name and full spec, defaults filled. */
export interface AppliedPolicy {
  name: string;
  spec: ReplicationPolicySpec;
}

export interface ObservedExtendedReplica {
  /** The third site, fed by the replica site. */
  site: string;
  policy: AppliedPolicy;
  state: ReplicationState;
}

export interface InitialReplicationProgress {
  method: 'network' | 'external-media' | 'existing-replica';
  bytesDone: number;
  bytesTotal: number;
}

/** One replication relationship, keyed by its ProtectedVM name. */
export interface ObservedRelationship {
  /** The ProtectedVM name. */
  name: string;
  /** The VM's name on its site. */
  vm: string;
  /** The pair as protection was enabled (the declared direction); a failover does not change it. */
  primary: string;
  replica: string;
  /**
   * True when drsite created it from a declaration (the vault remembers it). A relationship found on
   * a site but never declared is drift: reported, never removed.
   */
  managed: boolean;
  exists: boolean;
  state: ReplicationState;
  health: Health;
  /** Role per site name. */
  roles: Record<string, ReplicationRole>;
  /** Which site runs the VM now and which receives its changes: swapped after a failover. */
  direction: { primary: string; replica: string };
  /** Who paused it, when state is Suspended: an operator (left alone) or the engine itself (resumed). */
  suspendedBy?: 'operator' | 'engine';
  appliedPolicy?: AppliedPolicy;
  /** Names of the disks replicated. */
  disks: string[];
  replicaStoragePath?: string;
  extendedReplica?: ObservedExtendedReplica;
  testFailover: 'none' | 'active';
  /** Names of the `<vm>-Test` VMs while a test failover is active. */
  testVms: string[];
  /** RFC 3339. */
  lastReplicationTime?: string;
  /** Seconds the replica is behind the primary. */
  lagSeconds?: number;
  pendingBytes: number;
  initialReplication?: InitialReplicationProgress;
  recoveryPoints: number;
  /** Why health is not Normal, as the sites say it (primary's reasons first), e.g. a full disk and the space it needs. */
  healthReasons?: string[];
  /** The last error the relationship's engine met and, when it retries, when next (RFC 3339). */
  lastError?: { code: string; message: string; at: string };
  nextRetryAt?: string;
}

export type RecoveryPlanActionState = 'Running' | 'Succeeded' | 'Failed' | 'Waiting';

/** The last declarative action run for a recovery plan (the vault's last_actions row). */
export interface ObservedRecoveryPlan {
  name: string;
  lastActionId?: string;
  lastActionType?: string;
  lastActionState?: RecoveryPlanActionState;
}

export interface ObservedSiteVm {
  /** Names of the VM's disks as the hypervisor reports them. */
  disks: string[];
  running?: boolean;
}

export interface ObservedSite {
  name: string;
  reachable: boolean;
  /** VMs by name; absent when the inventory is unknown (site unreachable, not listed yet). */
  vms?: Record<string, ObservedSiteVm>;
}

export interface ObservedState {
  /** RFC 3339 instant of the observation: the planner's only clock. */
  observedAt: string;
  relationships: Record<string, ObservedRelationship>;
  recoveryPlans: Record<string, ObservedRecoveryPlan>;
  /** A declared site missing here is treated as unreachable. */
  sites: Record<string, ObservedSite>;
}

/** Own-property lookup: names such as `constructor` are valid DNS labels and must not hit the prototype. */
export function lookup<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

export function emptyObservedState(observedAt: string): ObservedState {
  return { observedAt, relationships: {}, recoveryPlans: {}, sites: {} };
}
