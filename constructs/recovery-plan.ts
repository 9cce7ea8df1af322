// RecoveryPlan construct: ordered groups of protected VMs failed over together, with script and
// manual actions before and after each group, in exactly the declared order.
import type { Construct } from 'constructs';
import type { FailoverRequest, ManualAction, RecoveryPlan as RecoveryPlanDocument, ScriptAction } from '../src/model/desired.ts';
import { DrResource, refName, type Ref, type ResourceMetaProps } from './dr-resource.ts';
import type { ProtectedVm } from './protected-vm.ts';

/** One step before or after a group: exactly one of `script` and `manual`. */
export interface RecoveryActionProps {
  /**
   * Shown in plans and jobs.
   * @default none (Site Recovery output names it <group>-before-<n> / <group>-after-<n>)
   */
  readonly name?: string;
  /**
   * Run only for these failover types.
   * @default all: ['test', 'planned', 'unplanned', 'failback']
   */
  readonly failoverTypes?: readonly ('test' | 'planned' | 'unplanned' | 'failback')[];
  /**
   * Run a script (path relative to where drsite runs, args, timeout, environment).
   * @default none
   */
  readonly script?: ScriptAction;
  /**
   * Wait for an operator: `drsite continue <plan>`.
   * @default none
   */
  readonly manual?: ManualAction;
}

/** One boot group: its VMs fail over in parallel, after the previous group. */
export interface RecoveryGroupProps {
  /**
   * Shown in plans and jobs.
   * @default none (group-<n> in Site Recovery output)
   */
  readonly name?: string;
  /** The protected VMs (constructs or names); each appears once per plan. */
  readonly vms: readonly Ref<ProtectedVm>[];
  /**
   * Actions before the group fails over, in this order.
   * @default []
   */
  readonly before?: readonly RecoveryActionProps[];
  /**
   * Actions after the group failed over, in this order.
   * @default []
   */
  readonly after?: readonly RecoveryActionProps[];
}

export interface RecoveryPlanProps extends ResourceMetaProps {
  /** Boot groups, failed over in this order. */
  readonly groups: readonly RecoveryGroupProps[];
  /**
   * The declarative action: a new id runs it once, the same id again is a no-op.
   * @default none: no failover requested
   */
  readonly failover?: FailoverRequest;
}

export class RecoveryPlan extends DrResource<RecoveryPlanDocument> {
  constructor(scope: Construct, id: string, props: RecoveryPlanProps) {
    const { name, labels, annotations, groups, failover } = props;
    super(scope, id, 'RecoveryPlan', { name, labels, annotations }, {
      groups: groups.map((g) => ({ ...g, vms: g.vms.map(refName) })),
      failover,
    });
  }
}
