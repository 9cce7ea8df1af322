// Desired state (with its generation) and observed status per resource. The generation moves only
// when the canonical spec changes; status.observedGeneration says which generation was acted on.

import { TerminalError } from '../model/errors.ts';
import { canonicalJson } from './canonical-json.ts';
import { CONDITION_STATUSES, mergeCondition, type Condition, type ConditionInput, type ResourceStatus } from './conditions.ts';
import type { Connection } from './sqlite.ts';
import { checkKey, iso } from './values.ts';

export interface DesiredResource {
  readonly kind: string;
  readonly name: string;
  readonly generation: number;
  readonly spec: unknown;
  /** ISO 8601: when the generation last moved. */
  readonly updatedAt: string;
}

export interface StoredStatus extends ResourceStatus {
  readonly kind: string;
  readonly name: string;
  readonly updatedAt: string;
}

interface ResourceRow extends Record<string, unknown> {
  kind: string;
  name: string;
  generation: number;
  spec: string;
  updated_at: number;
  deleted_at: number | null;
}

interface StatusRow extends Record<string, unknown> {
  kind: string;
  name: string;
  observed_generation: number;
  conditions: string;
  fields: string;
  updated_at: number;
}

export function recordDesired(c: Connection, kind: string, name: string, spec: unknown, now: number): { generation: number; changed: boolean } {
  checkKey(kind, name);
  const text = canonicalJson(spec, `${kind}/${name} spec`);
  return c.transaction(() => {
    const row = c.get<ResourceRow>('SELECT * FROM resources WHERE kind = ? AND name = ?', kind, name);
    if (!row) {
      c.run('INSERT INTO resources (kind, name, generation, spec, updated_at) VALUES (?, ?, 1, ?, ?)', kind, name, text, now);
      return { generation: 1, changed: true };
    }
    // A deleted-then-recreated resource continues its generation count: a status left from the
    // old incarnation must never look as if it had already observed the new one.
    if (row.deleted_at === null && row.spec === text) return { generation: row.generation, changed: false };
    const generation = row.generation + 1;
    c.run('UPDATE resources SET generation = ?, spec = ?, updated_at = ?, deleted_at = NULL WHERE kind = ? AND name = ?', generation, text, now, kind, name);
    return { generation, changed: true };
  });
}

export function getDesired(c: Connection, kind: string, name: string): DesiredResource | undefined {
  const row = c.get<ResourceRow>('SELECT * FROM resources WHERE kind = ? AND name = ? AND deleted_at IS NULL', kind, name);
  return row && toDesired(row);
}

export function listDesired(c: Connection, kind?: string): DesiredResource[] {
  const rows =
    kind === undefined
      ? c.all<ResourceRow>('SELECT * FROM resources WHERE deleted_at IS NULL ORDER BY kind, name')
      : c.all<ResourceRow>('SELECT * FROM resources WHERE deleted_at IS NULL AND kind = ? ORDER BY name', kind);
  return rows.map(toDesired);
}

/** Marks the resource deleted (a tombstone keeps its generation counter); true if it existed. */
export function deleteDesired(c: Connection, kind: string, name: string, now: number): boolean {
  return c.run('UPDATE resources SET deleted_at = ? WHERE kind = ? AND name = ? AND deleted_at IS NULL', now, kind, name).changes > 0;
}

function toDesired(r: ResourceRow): DesiredResource {
  return { kind: r.kind, name: r.name, generation: r.generation, spec: JSON.parse(r.spec), updatedAt: iso(r.updated_at) };
}

export function setStatus(c: Connection, kind: string, name: string, status: ResourceStatus, now: number): void {
  checkKey(kind, name);
  checkStatus(kind, name, status);
  c.run(
    `INSERT INTO status (kind, name, observed_generation, conditions, fields, updated_at) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (kind, name) DO UPDATE SET observed_generation = excluded.observed_generation,
       conditions = excluded.conditions, fields = excluded.fields, updated_at = excluded.updated_at`,
    kind, name, status.observedGeneration,
    canonicalJson(status.conditions, `${kind}/${name} status.conditions`),
    canonicalJson(status.fields, `${kind}/${name} status.fields`),
    now,
  );
}

export function getStatus(c: Connection, kind: string, name: string): StoredStatus | undefined {
  const row = c.get<StatusRow>('SELECT * FROM status WHERE kind = ? AND name = ?', kind, name);
  return row && toStatus(row);
}

export function listStatus(c: Connection, kind?: string): StoredStatus[] {
  const rows =
    kind === undefined
      ? c.all<StatusRow>('SELECT * FROM status ORDER BY kind, name')
      : c.all<StatusRow>('SELECT * FROM status WHERE kind = ? ORDER BY name', kind);
  return rows.map(toStatus);
}

export function deleteStatus(c: Connection, kind: string, name: string): boolean {
  return c.run('DELETE FROM status WHERE kind = ? AND name = ?', kind, name).changes > 0;
}

/** Read-modify-write of one condition; a resource without status starts at observedGeneration 0. */
export function setCondition(c: Connection, kind: string, name: string, cond: ConditionInput, now: number): Condition {
  checkKey(kind, name);
  checkCondition(kind, name, cond);
  return c.transaction(() => {
    const current = getStatus(c, kind, name) ?? { observedGeneration: 0, conditions: [], fields: {} };
    const conditions = mergeCondition(current.conditions, cond, now);
    setStatus(c, kind, name, { observedGeneration: current.observedGeneration, conditions, fields: current.fields }, now);
    return conditions.find((x) => x.type === cond.type)!;
  });
}

function toStatus(r: StatusRow): StoredStatus {
  return {
    kind: r.kind,
    name: r.name,
    observedGeneration: r.observed_generation,
    conditions: JSON.parse(r.conditions) as Condition[],
    fields: JSON.parse(r.fields) as Record<string, unknown>,
    updatedAt: iso(r.updated_at),
  };
}

function checkStatus(kind: string, name: string, s: ResourceStatus): void {
  if (!Number.isSafeInteger(s?.observedGeneration) || s.observedGeneration < 0) {
    throw new TerminalError('invalid-argument', `${kind}/${name} status.observedGeneration must be a non-negative integer, got ${JSON.stringify(s?.observedGeneration)}`);
  }
  if (!Array.isArray(s.conditions)) throw new TerminalError('invalid-argument', `${kind}/${name} status.conditions must be an array`);
  for (const cond of s.conditions) {
    checkCondition(kind, name, cond);
    if (Number.isNaN(Date.parse(cond.lastTransitionTime))) {
      throw new TerminalError('invalid-argument', `${kind}/${name} condition ${cond.type}: lastTransitionTime ${JSON.stringify(cond.lastTransitionTime)} is not an ISO time`);
    }
  }
  if (typeof s.fields !== 'object' || s.fields === null || Array.isArray(s.fields)) {
    throw new TerminalError('invalid-argument', `${kind}/${name} status.fields must be an object`);
  }
}

function checkCondition(kind: string, name: string, cond: ConditionInput): void {
  if (typeof cond?.type !== 'string' || cond.type === '') throw new TerminalError('invalid-argument', `${kind}/${name}: condition type must be a non-empty string`);
  if (!CONDITION_STATUSES.includes(cond.status)) {
    throw new TerminalError('invalid-argument', `${kind}/${name} condition ${cond.type}: status must be True, False or Unknown, got ${JSON.stringify(cond.status)}`);
  }
}
