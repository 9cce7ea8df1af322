// Every file in examples/invalid states the diagnostics it must produce in `# expect:` lines;
// the quickstart must load cleanly. The examples double as documentation of every error class.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { loadDesiredState } from '../../src/config/index.ts';

const root = join(import.meta.dirname, '..', '..');
const invalidDir = join(root, 'examples', 'invalid');

interface Expectation { file: string; line: number; column: number; path: string; summary: string }

function expectations(text: string): Expectation[] {
  const out: Expectation[] = [];
  for (const line of text.split('\n')) {
    const m = /^# expect: (\S+):(\d+):(\d+) (\S+) (.+)$/.exec(line);
    if (m) out.push({ file: m[1], line: Number(m[2]), column: Number(m[3]), path: m[4] === '-' ? '' : m[4], summary: m[5] });
  }
  return out;
}

// A zero-byte file cannot carry a comment, so its expectation lives here.
const NO_ROOM_FOR_COMMENTS: Record<string, Expectation[]> = {
  'empty-file.yaml': [{ file: 'empty-file.yaml', line: 0, column: 0, path: '', summary: 'empty file' }],
};

describe('examples/invalid', () => {
  const files = readdirSync(invalidDir).filter((f) => /\.ya?ml$/.test(f)).sort();

  test('there is one example per error class', () => {
    expect(files.length).toBeGreaterThanOrEqual(40);
  });

  test.each(files)('%s produces exactly the diagnostics it states', async (f) => {
    const text = readFileSync(join(invalidDir, f), 'latin1');
    const expected = NO_ROOM_FOR_COMMENTS[f] ?? expectations(text);
    expect(expected.length, `${f} has no "# expect:" line`).toBeGreaterThan(0);

    const result = await loadDesiredState([f], { cwd: invalidDir });
    expect(result.ok).toBe(false);
    const errors = result.diagnostics.filter((d) => d.severity === 'error');
    expect(errors.map((d) => `${d.file}:${d.line}:${d.column} ${d.path || '-'}`))
      .toEqual(expected.map((e) => `${e.file}:${e.line}:${e.column} ${e.path || '-'}`));
    errors.forEach((d, i) => {
      expect(d.summary).toContain(expected[i].summary);
      expect(d.detail, `${f}: every diagnostic says what was expected`).not.toBe('');
      if (d.line > 0) expect(d.column).toBeGreaterThanOrEqual(1);
    });
  });

  test('an inline secret is reported without echoing it', async () => {
    const text = readFileSync(join(invalidDir, 'inline-secret.yaml'), 'utf8');
    const secret = /accountKeyEnv: (\S+)/.exec(text)![1];
    const result = await loadDesiredState(['inline-secret.yaml'], { cwd: invalidDir });
    expect(result.ok).toBe(false);
    expect(JSON.stringify(result.diagnostics)).not.toContain(secret);
    expect(JSON.stringify(result.diagnostics)).not.toContain(secret.slice(0, 12));
  });
});

describe('examples/quickstart', () => {
  test('loads with no diagnostics at all', async () => {
    const result = await loadDesiredState(['examples/quickstart'], { cwd: root });
    expect(result.diagnostics).toEqual([]);
    expect(result.ok).toBe(true);
  });

  test('is the documented setup, with defaults filled in', async () => {
    const result = await loadDesiredState(['examples/quickstart'], { cwd: root });
    if (!result.ok) throw new Error('quickstart did not load');
    const { state } = result;
    expect(state.sites.map((s) => s.metadata.name)).toEqual(['site-a', 'site-b']);
    expect(state.sites.every((s) => s.spec.type === 'host' && s.spec.endpoint === undefined)).toBe(true);
    const siteB = state.sites[1].spec;
    expect(siteB.replicaServer).toMatchObject({ enabled: true, authentication: 'certificate', port: 8443 });
    expect(siteB.replicaServer?.allowedPrimaries?.[0].server).toBe('site-a');
    expect(siteB.hypervisor).toBe('files');
    expect(siteB.dataPath).toBe('.drsite/sites/site-b');

    expect(state.policies).toHaveLength(1);
    expect(state.policies[0].spec).toEqual({
      frequency: '30s',
      recoveryPoints: { additional: 4 },
      appConsistentEvery: '0',
      compression: true,
      encryption: 'aes-256-gcm',
      initialReplication: { method: 'network', startAt: 'immediately' },
      resync: { thresholdPercent: 50, window: '22:00-06:00', automatic: true },
      multiVmConsistency: false,
    });

    expect(state.networkMappings.find((m) => m.spec.source.site === 'site-a')?.spec.testNetwork).toBe('lan-test');
    expect(state.protectedVms.map((v) => v.metadata.name)).toEqual(['db-01', 'web-01']);
    for (const vm of state.protectedVms) {
      expect(vm.spec).toMatchObject({ vm: vm.metadata.name, primary: 'site-a', replica: 'site-b', disks: { exclude: [] } });
      expect(vm.spec.failoverNetwork?.adapters[0].ipv4?.address).toMatch(/^10\.20\.0\.\d+\/24$/);
    }

    const plan = state.recoveryPlans[0];
    expect(plan.spec.groups.map((g) => g.vms)).toEqual([['db-01'], ['web-01']]);
    const script = plan.spec.groups[0].after?.[0].script;
    expect(script).toEqual({ path: join(root, 'examples/quickstart/scripts/notify.sh'), args: ['database-up'], timeout: '30s' });
    expect(plan.spec.groups[1].before?.[0].script?.timeout).toBe('5m');
    expect(plan.spec.groups[1].before?.[0].failoverTypes).toEqual(['test', 'planned', 'unplanned', 'failback']);
    expect(plan.spec.failover).toBeUndefined();

    expect(state.sources['ProtectedVM/web-01']).toEqual({ file: join('examples', 'quickstart', 'vms.yaml'), line: 3, column: 1 });
    expect(Object.keys(state.sources)).toHaveLength(8);
  });
});
