// Status conditions with Kubernetes semantics: lastTransitionTime records when `status` last
// changed, not when the condition was last written, so "Ready=False since 10:02" stays true
// across every reconcile pass that re-asserts it.

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  readonly type: string;
  readonly status: ConditionStatus;
  readonly reason: string;
  readonly message: string;
  /** ISO 8601 (UTC). */
  readonly lastTransitionTime: string;
}

/** What a caller asserts; the transition time is derived. */
export type ConditionInput = Omit<Condition, 'lastTransitionTime'>;

export interface ResourceStatus {
  readonly observedGeneration: number;
  readonly conditions: readonly Condition[];
  readonly fields: Readonly<Record<string, unknown>>;
}

export const CONDITION_STATUSES: readonly ConditionStatus[] = ['True', 'False', 'Unknown'];

/**
 * Returns `conditions` with `cond` set (replacing the one of the same type, else appended).
 * lastTransitionTime is kept when status is unchanged, set to `now` when it changes or is new.
 */
export function mergeCondition(conditions: readonly Condition[], cond: ConditionInput, now: number): Condition[] {
  const at = new Date(now).toISOString();
  const i = conditions.findIndex((c) => c.type === cond.type);
  if (i < 0) return [...conditions, { ...pick(cond), lastTransitionTime: at }];
  const prev = conditions[i];
  const next: Condition = {
    ...pick(cond),
    lastTransitionTime: prev.status === cond.status ? prev.lastTransitionTime : at,
  };
  return conditions.map((c, j) => (j === i ? next : c));
}

function pick(c: ConditionInput): ConditionInput {
  return { type: c.type, status: c.status, reason: c.reason, message: c.message };
}
