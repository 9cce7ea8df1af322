// Accumulates a plan's actions and warnings in emission order; the rule modules (plan.ts,
// plan-failover.ts) emit in the final, dependency-respecting order so nothing is sorted afterwards.
import type { ActionDetails, ActionType, Plan, PlannedAction, PlanWarning, Target, WarningCode } from './plan-types.ts';
import { TerminalError } from '../model/errors.ts';

export class PlanBuilder {
  readonly actions: PlannedAction[] = [];
  readonly warnings: PlanWarning[] = [];
  private readonly ids = new Set<string>();

  /** Appends an action and returns its id. dependsOn must name actions already emitted. */
  add<K extends ActionType>(
    type: K,
    target: Target,
    reason: string,
    destructive: boolean,
    details: ActionDetails[K],
    dependsOn: readonly string[] = [],
    idSuffix = '',
  ): string {
    const id = `${type}:${target.kind}/${target.name}${idSuffix}`;
    // Both are planner bugs, not user errors: a duplicate id would make apply's journal ambiguous,
    // and a forward dependency would make the order a lie.
    if (this.ids.has(id)) throw new TerminalError('invalid-state', `planner emitted action ${id} twice`);
    for (const d of dependsOn) {
      if (!this.ids.has(d)) throw new TerminalError('invalid-state', `planner: action ${id} depends on ${d}, which is not planned before it`);
    }
    this.ids.add(id);
    this.actions.push({ id, type, target, reason, destructive, details, dependsOn: [...new Set(dependsOn)] } as PlannedAction);
    return id;
  }

  warn(code: WarningCode, target: Target, message: string): void {
    this.warnings.push({ code, target, message });
  }

  build(): Plan {
    return { actions: this.actions, warnings: this.warnings };
  }
}
