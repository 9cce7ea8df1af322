// Runs one table case through plan() with the checks every case shares: inputs deep-frozen (plan
// must not mutate them), two calls deep-equal (pure), dependencies point backwards, plain JSON.
import { expect } from 'vitest';
import type { DesiredState } from '../../src/model/desired.ts';
import type { ObservedState } from '../../src/model/observed.ts';
import { plan, type Plan, type PlannedAction, type WarningCode } from '../../src/reconciler/plan.ts';
import { deepFreeze } from './fixtures.ts';

export interface Case {
  reason: string;
  desired: DesiredState;
  observed: ObservedState;
  /** `${type} ${target.name}` in plan order. */
  want: string[];
  warnings?: WarningCode[];
  check?: (p: Plan) => void;
}

export const brief = (a: PlannedAction): string => `${a.type} ${a.target.name}`;

export function runCase(c: Case): Plan {
  const d = deepFreeze(structuredClone(c.desired));
  const o = deepFreeze(structuredClone(c.observed));
  const p = plan(d, o);
  expect(plan(d, o), 'plan() is deterministic').toEqual(p);
  expect(p.actions.map(brief)).toEqual(c.want);
  expect(p.warnings.map((w) => w.code)).toEqual(c.warnings ?? []);
  const seen = new Set<string>();
  for (const a of p.actions) {
    for (const dep of a.dependsOn) expect(seen.has(dep), `${a.id} depends on ${dep} planned before it`).toBe(true);
    expect(seen.has(a.id), `unique id ${a.id}`).toBe(false);
    seen.add(a.id);
    expect(a.reason.length).toBeGreaterThan(0);
  }
  expect(JSON.parse(JSON.stringify(p))).toEqual(p);
  c.check?.(p);
  return p;
}

export const find = (p: Plan, type: PlannedAction['type'], name?: string): PlannedAction => {
  const a = p.actions.find((x) => x.type === type && (name === undefined || x.target.name === name));
  if (!a) throw new Error(`no ${type} ${name ?? ''} in plan`);
  return a;
};
