// `drsite validate` and `drsite plan` as separate processes, on the shipped examples.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { loadDesiredState } from '../../src/config/index.ts';
import type { ObservedRelationship } from '../../src/model/observed.ts';
import { recordRelationship } from '../../src/reconciler/observe-vault.ts';
import { Vault } from '../../src/vault/vault.ts';
import { drsite, ROOT } from './run-cli.ts';

const tmp = mkdtempSync(join(tmpdir(), 'drsite-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('drsite validate', () => {
  test('the quickstart is valid', async () => {
    const r = await drsite(['validate', 'examples/quickstart']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Valid: 2 sites, 1 policies, .*2 protectedVms, 1 recoveryPlans\.$/m);
  });

  const invalid = readdirSync(join(ROOT, 'examples', 'invalid')).filter((f) => f.endsWith('.yaml'));
  test.each(invalid)('examples/invalid/%s exits 1 naming file:line:column and the field path', async (file) => {
    const expects = readFileSync(join(ROOT, 'examples', 'invalid', file), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('# expect: '))
      .map((l) => l.slice('# expect: '.length).split(' '));
    // An empty file cannot carry its own comment: its expectation is stated here.
    if (file === 'empty-file.yaml') expects.push(['empty-file.yaml:0:0', '-']);
    expect(expects.length).toBeGreaterThan(0);
    const r = await drsite(['validate', `examples/invalid/${file}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace without --debug
    for (const [position, path] of expects) {
      const line = r.stderr.split('\n').find((l) => l.includes(`${position}: error:`));
      expect(line, `stderr:\n${r.stderr}`).toBeDefined();
      if (path !== '-') expect(line).toContain(`(at ${path})`);
    }
  });

  test('--output json reports diagnostics as data', async () => {
    const r = await drsite(['validate', '--output', 'json', 'examples/invalid/dangling-reference.yaml']);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { valid: boolean; diagnostics: { file: string; line: number; path: string }[] };
    expect(out.valid).toBe(false);
    expect(out.diagnostics[0]).toMatchObject({ severity: 'error', file: expect.stringContaining('dangling-reference.yaml') });
    expect(out.diagnostics[0].line).toBeGreaterThan(0);
  });

  test('a missing path is invalid input, not a crash', async () => {
    const r = await drsite(['validate', join(tmp, 'nope.yaml')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('nope.yaml');
  });
});

describe('drsite plan', () => {
  test('on an empty vault lists enable-protection for both VMs; after recording that state, no changes', async () => {
    const vault = join(tmp, 'vault.db');
    const first = await drsite(['plan', '--output', 'json', '--vault', vault, 'examples/quickstart']);
    expect(first.code).toBe(0);
    const plan = JSON.parse(first.stdout) as { actions: { type: string; target: { name: string } }[]; summary: { add: number } };
    const enabled = plan.actions.filter((a) => a.type === 'enable-protection').map((a) => a.target.name);
    expect(enabled.sort()).toEqual(['db-01', 'web-01']);
    expect(plan.actions.every((a) => !('destructive' in a) || (a as { destructive: boolean }).destructive === false)).toBe(true);

    const detailed = await drsite(['plan', '--detailed-exitcode', '--vault', vault, 'examples/quickstart']);
    expect(detailed.code).toBe(2);
    expect(detailed.stdout).toMatch(/^Plan: 4 to add, 0 to change, 0 to remove, 0 destructive\.$/m);

    // Record the state the sites would report once protection converged.
    const loaded = await loadDesiredState([join(ROOT, 'examples', 'quickstart')]);
    if (!loaded.ok) throw new Error('quickstart must load');
    const v = Vault.open(vault);
    for (const pvm of loaded.state.protectedVms) {
      const policy = loaded.state.policies.find((p) => p.metadata.name === pvm.spec.policy)!;
      const rel: ObservedRelationship = {
        name: pvm.metadata.name,
        vm: pvm.spec.vm,
        primary: pvm.spec.primary,
        replica: pvm.spec.replica,
        managed: true,
        exists: true,
        state: 'Replicating',
        health: 'Normal',
        roles: { [pvm.spec.primary]: 'Primary', [pvm.spec.replica]: 'Replica' },
        direction: { primary: pvm.spec.primary, replica: pvm.spec.replica },
        appliedPolicy: { name: policy.metadata.name, spec: policy.spec },
        disks: ['os', 'data'],
        testFailover: 'none',
        testVms: [],
        pendingBytes: 0,
        recoveryPoints: 5,
      };
      recordRelationship(v, rel, v.recordDesired('ProtectedVM', pvm.metadata.name, pvm.spec).generation);
    }
    v.close();

    const second = await drsite(['plan', '--detailed-exitcode', '--output', 'json', '--vault', vault, 'examples/quickstart']);
    expect(JSON.parse(second.stdout).actions).toEqual([]);
    expect(second.code).toBe(0);
    const text = await drsite(['plan', '--vault', vault, 'examples/quickstart']);
    expect(text.stdout).toMatch(/^No changes\./m);
  });

  test('invalid declarations exit 1 before touching the vault', async () => {
    const r = await drsite(['plan', '--vault', join(tmp, 'untouched.db'), 'examples/invalid/dangling-reference.yaml']);
    expect(r.code).toBe(1);
    expect(readdirSync(tmp)).not.toContain('untouched.db');
  });
});
