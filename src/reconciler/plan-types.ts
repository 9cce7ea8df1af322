// The plan as plain data: typed actions, each with the reason it was chosen and whether it destroys
// something, plus warnings for drift the planner saw and deliberately did not act on.

export type TargetKind = 'ProtectedVM' | 'RecoveryPlan';

export interface Target {
  kind: TargetKind;
  name: string;
}

/** Where a failover-family action comes from: the recovery plan, its request and the group. */
export interface FailoverOrigin {
  recoveryPlan: string;
  failoverId: string;
  /** 0-based index of the group in the plan's declared order. */
  groupIndex: number;
  groupName?: string;
}

export interface PolicyFieldChange {
  field: string;
  /** Canonical JSON of the old and new value; undefined when absent on that side. */
  from?: string;
  to?: string;
}

export interface ActionDetails {
  'enable-protection': {
    vm: string;
    primary: string;
    replica: string;
    policy: string;
    /** Disks that will replicate; undefined when the primary's inventory is unknown. */
    disks?: string[];
    replicaStoragePath?: string;
    replicationGroup?: string;
  };
  'start-initial-replication': {
    method: 'network' | 'external-media' | 'existing-replica';
    startAt: string;
    /** RFC 3339: the executor waits until then (startAt is in the future of the observation). */
    notBefore?: string;
    mediaPath?: string;
  };
  'change-policy': {
    /** replica: the first hop (primary -> replica); extended: replica -> extended replica. */
    hop: 'replica' | 'extended';
    from?: string;
    to: string;
    changes: PolicyFieldChange[];
  };
  'change-disk-set': { added: string[]; removed: string[] };
  'move-replica-storage': { site: string; from?: string; to: string };
  'extend-replication': { from: string; site: string; policy: string };
  'remove-extended-replication': { site: string; policy: string };
  'disable-protection': {
    vm: string;
    primary: string;
    replica: string;
    /** Why: the ProtectedVM is no longer declared, or its vm/sites changed (replacement). */
    cause: 'undeclared' | 'replaced';
    testVms: string[];
  };
  resume: { suspendedBy: 'engine' };
  resync: { window: string; thresholdPercent: number };
  'test-failover': FailoverOrigin & {
    site: string;
    recoveryPoint: string;
    testVm: string;
    /** Network the test VM joins; null: disconnected (the default). */
    testNetwork: string | null;
  };
  'cleanup-test-failover': FailoverOrigin & { site: string; testVms: string[] };
  'planned-failover': FailoverOrigin & { from: string; to: string; recoveryPoint: 'latest' };
  'unplanned-failover': FailoverOrigin & { from: string; to: string; recoveryPoint: string };
  'commit-failover': FailoverOrigin & { site: string };
  'cancel-failover': FailoverOrigin & { site: string };
  /** from = the site that becomes primary, to = the site that becomes its replica. */
  'reverse-replication': FailoverOrigin & { from: string; to: string };
  failback: FailoverOrigin & { from: string; to: string; method: 'minimize-downtime' | 'full-download' };
}

export type ActionType = keyof ActionDetails;

export const PROTECTION_ACTIONS = [
  'enable-protection',
  'start-initial-replication',
  'change-policy',
  'change-disk-set',
  'move-replica-storage',
  'extend-replication',
  'remove-extended-replication',
  'disable-protection',
  'resume',
  'resync',
] as const satisfies readonly ActionType[];

export const FAILOVER_ACTIONS = [
  'test-failover',
  'cleanup-test-failover',
  'planned-failover',
  'unplanned-failover',
  'commit-failover',
  'cancel-failover',
  'reverse-replication',
  'failback',
] as const satisfies readonly ActionType[];

export type FailoverActionType = (typeof FAILOVER_ACTIONS)[number];

interface ActionBase {
  /** Deterministic: the same (desired, observed) gives the same ids, so apply can journal by id. */
  id: string;
  target: Target;
  /** Human: why this action was chosen. */
  reason: string;
  destructive: boolean;
  /** Ids of actions that must finish first; always earlier in `actions`. */
  dependsOn: string[];
}

export type PlannedAction = {
  [K in ActionType]: ActionBase & { type: K; details: ActionDetails[K] };
}[ActionType];

export type ActionOf<K extends ActionType> = Extract<PlannedAction, { type: K }>;

export type WarningCode =
  | 'site-unreachable'
  | 'vm-not-found'
  | 'disk-missing'
  | 'unmanaged-relationship'
  | 'suspended-by-operator'
  | 'resync-required'
  | 'critical'
  | 'failover-state'
  | 'reversed-direction'
  | 'failover-refused'
  | 'failover-waiting'
  | 'failover-nothing-to-do'
  | 'last-action-failed'
  | 'unknown-policy';

/** Something the planner noticed and did not act on: drift is reported here, never "fixed" destructively. */
export interface PlanWarning {
  code: WarningCode;
  target: Target;
  message: string;
}

export interface Plan {
  actions: PlannedAction[];
  warnings: PlanWarning[];
}

/**
 * Warnings that mean a declaration is not met and cannot be as things stand: a declared failover
 * the sites' state refuses, or one whose run failed. `plan` and `apply` exit 1 on them (a GitOps
 * pipeline must not take "nothing to do" for "done"); `failover-waiting` is not among them, the
 * request runs once what it waits for is done.
 */
export const UNMET_WARNINGS: ReadonlySet<WarningCode> = new Set<WarningCode>(['failover-refused', 'last-action-failed']);

export const unmetDeclarations = (plan: Plan): PlanWarning[] => plan.warnings.filter((w) => UNMET_WARNINGS.has(w.code));
