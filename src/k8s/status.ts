// What `.status` of each custom resource should say, from what the reconciler recorded in the
// vault (the same records `drsite status` prints) plus whether the declaration was accepted,
// and the JSON merge patch that turns the current status into it (nothing to write: no request).
import { formatDiagnostic, type Diagnostic } from '../model/diagnostics.ts';
import type { ObservedRelationship } from '../model/observed.ts';
import { RELATIONSHIP_FIELD } from '../reconciler/status-fields.ts';
import { canonicalJson } from '../vault/canonical-json.ts';
import { mergeCondition, type Condition, type ConditionInput, type Vault } from '../vault/vault.ts';
import type { CustomObject } from './kube-api.ts';

export interface StatusInput {
  vault: Vault | undefined;
  /** This object's diagnostics from the last load (errors make Accepted False). */
  diagnostics: readonly Diagnostic[];
  /** The generation the last applied declarations were built from; undefined: never applied. */
  appliedGeneration: number | undefined;
  /** Why the declarations as a whole were not applied, when they were not. */
  notApplied?: string;
  now: number;
}

const lag = (s: number | undefined): string | undefined =>
  s === undefined ? undefined : s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;

function acceptedCondition(input: StatusInput): ConditionInput {
  const errors = input.diagnostics.filter((d) => d.severity === 'error');
  if (errors.length > 0) return { type: 'Accepted', status: 'False', reason: 'Invalid', message: errors.map((d) => formatDiagnostic(d)).join('\n') };
  if (input.notApplied) return { type: 'Accepted', status: 'False', reason: 'NotApplied', message: input.notApplied };
  const warnings = input.diagnostics.map((d) => formatDiagnostic(d)).join('\n');
  return { type: 'Accepted', status: 'True', reason: 'Valid', message: warnings || 'the declaration is valid and applied' };
}

function relationshipFields(rel: ObservedRelationship | null | undefined, relationshipId: unknown): Record<string, unknown> {
  if (!rel) return { state: 'NotProtected' };
  return {
    state: rel.state,
    health: rel.health,
    roles: rel.roles,
    direction: rel.direction,
    ...(rel.lastReplicationTime && { lastReplicationTime: rel.lastReplicationTime }),
    ...(rel.lagSeconds !== undefined && { lagSeconds: Math.round(rel.lagSeconds), lag: lag(Math.round(rel.lagSeconds)) }),
    pendingBytes: rel.pendingBytes,
    recoveryPoints: rel.recoveryPoints,
    testFailover: rel.testFailover,
    testVms: rel.testVms,
    ...(rel.initialReplication && { initialReplication: rel.initialReplication }),
    ...(typeof relationshipId === 'string' && { relationshipId }),
  };
}

const LAST_ACTION_KEYS = ['id', 'type', 'jobId', 'state', 'startedAt', 'endedAt', 'waitingFor', 'error'] as const;

/** The whole status the object should have now. */
export function statusFor(obj: CustomObject, input: StatusInput): Record<string, unknown> {
  const previous = (obj.status?.conditions as Condition[] | undefined) ?? [];
  const stored = input.vault?.getStatus(obj.kind, obj.metadata.name);
  let conditions: Condition[] = [];
  // The reconciler's own conditions (Protected, Ready) keep their transition times from the vault.
  for (const c of stored?.conditions ?? []) conditions.push(c);
  const accepted = acceptedCondition(input);
  const prevAccepted = previous.find((c) => c.type === 'Accepted');
  conditions = mergeCondition(conditions, accepted, input.now).map((c) =>
    c.type === 'Accepted' && prevAccepted && prevAccepted.status === accepted.status ? { ...c, lastTransitionTime: prevAccepted.lastTransitionTime } : c);
  const status: Record<string, unknown> = {
    observedGeneration: input.appliedGeneration ?? 0,
    conditions: conditions.map((c) => ({ ...c, ...(input.appliedGeneration !== undefined && { observedGeneration: input.appliedGeneration }) })),
  };
  if (obj.kind === 'ProtectedVM') {
    const fields = stored?.fields ?? {};
    Object.assign(status, relationshipFields(fields[RELATIONSHIP_FIELD] as ObservedRelationship | null | undefined, fields.relationshipId));
  }
  if (obj.kind === 'RecoveryPlan') {
    const last = stored?.fields.lastAction as Record<string, unknown> | undefined;
    if (last) status.lastAction = Object.fromEntries(LAST_ACTION_KEYS.filter((k) => last[k] !== undefined).map((k) => [k, last[k]]));
  }
  return status;
}

/**
 * RFC 7386 merge patch from `from` to `to` (null deletes); undefined when they are equal. Values
 * compare canonically: the API server returns objects with their keys in its own order.
 */
export function mergePatch(from: unknown, to: unknown): unknown {
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObj(from) || !isObj(to)) return from !== undefined && canonicalJson(from) === canonicalJson(to) ? undefined : to;
  const patch: Record<string, unknown> = {};
  for (const k of Object.keys(from)) if (!(k in to)) patch[k] = null;
  for (const [k, v] of Object.entries(to)) {
    if (v === undefined) continue;
    const p = k in from ? mergePatch(from[k], v) : v;
    if (p !== undefined) patch[k] = p;
  }
  return Object.keys(patch).length > 0 ? patch : undefined;
}
