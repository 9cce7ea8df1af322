// Generated from schemas/recoveryplan.schema.json by `npm run gen:types`. Do not edit by hand:
// test/model/types-drift.test.ts fails when this file and the schemas disagree.

import type { ApiVersion, DnsLabel, ObjectMeta } from './site.ts';
import type { DateTime } from './replicationpolicy.ts';
import type { ProtectedVM } from './protectedvm.ts';

export type RecoveryAction = Action & Action1 & Action & Action1;

export type Action =
  | {
      [k: string]: unknown | undefined;
    }
  | {
      [k: string]: unknown | undefined;
    };

/**
 * Ordered groups of protected VMs failed over together, with actions between groups.
 */
export interface RecoveryPlan {
  apiVersion: ApiVersion;
  kind: 'RecoveryPlan';
  metadata: ObjectMeta;
  spec: RecoveryPlanSpec;
}

export interface RecoveryPlanSpec {
  /**
   * @minItems 1
   */
  groups: [RecoveryGroup, ...RecoveryGroup[]];
  failover?: FailoverRequest;
}

export interface RecoveryGroup {
  name?: string;
  /**
   * ProtectedVM names, failed over in parallel.
   *
   * @minItems 1
   */
  vms: [DnsLabel, ...DnsLabel[]];
  before?: RecoveryAction[];
  after?: RecoveryAction[];
}

export interface Action1 {
  name?: string;
  /**
   * Run only for these failover types. @default all
   */
  failoverTypes?: ('test' | 'planned' | 'unplanned' | 'failback')[];
  script?: ScriptAction;
  manual?: ManualAction;
}

export interface ScriptAction {
  path: string;
  args?: string[];
  /**
   * @default 5m
   */
  timeout?: string;
  env?: {
    [k: string]: string | undefined;
  };
}

export interface ManualAction {
  message: string;
}

/**
 * The declarative action: a new id runs it once; the same id again is a no-op.
 */
export interface FailoverRequest {
  id: string;
  type: 'test' | 'planned' | 'unplanned' | 'failback' | 'commit' | 'cancel';
  /**
   * latest, latest-app-consistent, or an RFC 3339 time (the newest point at or before it). @default latest
   */
  recoveryPoint?: ('latest' | 'latest-app-consistent') | DateTime;
  /**
   * Commit right after the failover (no cancel afterwards). @default false
   */
  commit?: boolean;
  /**
   * With type test: remove the <vm>-Test VMs of the previous test failover. @default false
   */
  cleanupTest?: boolean;
  /**
   * @default minimize-downtime
   */
  failbackMethod?: 'minimize-downtime' | 'full-download';
  /**
   * Planned failover and failback: stop a guest hard when it does not power off within its site's shutdown timeout, instead of failing the step. @default false
   */
  forceShutdown?: boolean;
}
