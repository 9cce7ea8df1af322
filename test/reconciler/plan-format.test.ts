// Plan printing: symbols, one line per action with target and reason, indented details, summary
// counts, colour only on request, and the JSON form. Assertions on lines, no snapshots.
import { describe, expect, test } from 'vitest';
import { plan } from '../../src/reconciler/plan.ts';
import { ACTION_SYMBOLS, formatPlan, planSummary, planToJson } from '../../src/reconciler/plan-format.ts';
import { FAILOVER_ACTIONS, PROTECTION_ACTIONS } from '../../src/reconciler/plan-types.ts';
import { desired, observed, policy, pvm, recoveryPlan } from './fixtures.ts';

// new: enable+start (+2); web: policy edit (~1) and a newly excluded disk (~1, destructive);
// gone: undeclared (-1, destructive); dr: planned failover with commit for web (3 x !, destructive).
const d = desired({
  vms: [pvm('new'), pvm('web', { disks: { exclude: ['disk1'] } })],
  policies: [policy('gold', { frequency: '30s' }), policy('silver')],
  plans: [recoveryPlan('dr', [['web']], { id: 'p1', type: 'planned', commit: true })],
});
const o = observed(desired({ vms: [pvm('web'), pvm('gone')] }), (x) => {
  x.sites['site-a'].vms!.new = { disks: ['disk0'] };
  x.relationships.gone.testVms = [];
  x.relationships.web.state = 'Replicating';
  x.relationships.ghost = { ...x.relationships.gone, name: 'ghost', managed: false };
});
const p = plan(d, o);

describe('formatPlan', () => {
  const text = formatPlan(p);
  const lines = text.split('\n');

  test('one line per action: symbol, type, target and reason', () => {
    const actionLines = lines.filter((l) => /^ {2}[-+~!] /.test(l));
    expect(actionLines).toHaveLength(p.actions.length);
    expect(actionLines.map((l) => l.slice(2, 3))).toEqual(['-', '+', '+', '~', '~', '!', '!', '!']);
    expect(actionLines[0]).toMatch(/^ {2}- disable-protection ProtectedVM\/gone \(destructive\): ProtectedVM gone is no longer declared/);
    expect(actionLines[1]).toMatch(/^ {2}\+ enable-protection ProtectedVM\/new: declared but not protected/);
    expect(actionLines[4]).toMatch(/^ {2}~ change-disk-set ProtectedVM\/web \(destructive\): /);
    expect(actionLines[5]).toMatch(/^ {2}! planned-failover ProtectedVM\/web: recovery plan dr, failover p1 \(planned\), group 1 \(g1\)/);
    // The failover family's `!` already says destructive; no extra marker there.
    expect(actionLines[5]).not.toMatch(/\(destructive\)/);
  });

  test('details are indented under their action', () => {
    const i = lines.findIndex((l) => l.includes('~ change-policy ProtectedVM/web'));
    expect(lines.slice(i + 1, i + 6)).toEqual([
      '        hop: replica',
      '        from: gold',
      '        to: gold',
      '        ~ frequency: "5m" -> "30s"',
      expect.stringMatching(/^ {2}~ change-disk-set /),
    ]);
    expect(lines).toContain('        removed: disk1');
    expect(lines).not.toContain('        added: ');
    // Recovery plan, request and group are in the reason line, not repeated as details.
    const j = lines.findIndex((l) => l.includes('! commit-failover'));
    expect(lines[j + 1]).toBe('        site: site-b');
  });

  test('warnings and the summary line with the counts', () => {
    expect(lines).toContain('Warning [unmanaged-relationship] ProtectedVM/ghost: replication of VM gone (site-a -> site-b) exists but was never declared; drsite leaves it alone');
    expect(planSummary(p)).toEqual({ add: 2, change: 2, remove: 1, destructive: 5 });
    expect(lines.at(-2)).toBe('Plan: 2 to add, 2 to change, 1 to remove, 5 destructive.');
    expect(text.endsWith('\n')).toBe(true);
  });

  test('no colour unless asked; colour wraps symbols in ANSI codes', () => {
    expect(text).not.toMatch(/\x1b\[/);
    const coloured = formatPlan(p, { color: true });
    expect(coloured).toContain('\x1b[32m  + enable-protection\x1b[0m');
    expect(coloured).toContain('\x1b[1;35m  ! planned-failover\x1b[0m');
    expect(coloured.replace(/\x1b\[[0-9;]*m/g, '')).toBe(text);
  });

  test('empty plan: "No changes." and no summary counts', () => {
    const same = desired({ vms: [pvm('web')] });
    const out = formatPlan(plan(same, observed(same)));
    expect(out).toBe('No changes. The observed state matches the declarations.\n');
  });

  test('a refused declaration is never "No changes": the summary says it is refused and not met', () => {
    // Failback while the VM already runs on its declared primary: the planner refuses it.
    const fb = desired({ vms: [pvm('web')], plans: [recoveryPlan('dr', [['web']], { id: 'fb1', type: 'failback' })] });
    const refused = plan(fb, observed(fb));
    expect(refused.actions).toEqual([]);
    const out = formatPlan(refused);
    expect(out).not.toMatch(/No changes/);
    expect(out).toMatch(/^Warning \[failover-refused\] RecoveryPlan\/dr: failover fb1 \(failback\) refused: web runs on its declared primary site-a/m);
    expect(out).toMatch(/^Refused: 1 declared action cannot run \(see the warnings above\); nothing was planned\. The declarations are not met\.$/m);
    expect(JSON.parse(planToJson(refused)).refused.map((w: { code: string }) => w.code)).toEqual(['failover-refused']);
  });

  test('a declaration waiting for an action under way says so instead of "No changes"', () => {
    const t = desired({ vms: [pvm('web')], plans: [recoveryPlan('dr', [['web']], { id: 't2', type: 'test' })] });
    const busy = plan(t, observed(t, (o) => { o.recoveryPlans.dr = { name: 'dr', lastActionId: 't1', lastActionType: 'test', lastActionState: 'Waiting' }; }));
    const out = formatPlan(busy);
    expect(out).toMatch(/^No changes now: a declared action waits \(see the warnings above\)\. The declarations are not met yet\.$/m);
    expect(JSON.parse(planToJson(busy)).refused).toEqual([]);
  });

  test('every action type has a symbol; failover family is ! except test (+) and cleanup (-)', () => {
    expect(Object.keys(ACTION_SYMBOLS).sort()).toEqual([...PROTECTION_ACTIONS, ...FAILOVER_ACTIONS].sort());
    expect(FAILOVER_ACTIONS.filter((t) => ACTION_SYMBOLS[t] !== '!')).toEqual(['test-failover', 'cleanup-test-failover']);
  });
});

describe('planToJson', () => {
  test('versioned JSON with summary, actions and warnings that round-trips', () => {
    const j = JSON.parse(planToJson(p));
    expect(j.formatVersion).toBe(1);
    expect(j.summary).toEqual({ add: 2, change: 2, remove: 1, destructive: 5 });
    expect(j.actions).toEqual(p.actions);
    expect(j.warnings).toEqual(p.warnings);
    expect(j.actions[0]).toMatchObject({ type: 'disable-protection', target: { kind: 'ProtectedVM', name: 'gone' }, destructive: true, dependsOn: [] });
  });
});
