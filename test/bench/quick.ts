// The benchmark suite's smoke run, `npm run bench -- --quick`, as CI runs it through `npm test`:
// every case still runs on small sizes and verifies its own results (byte equality, points
// readable). Speed is never judged here; a missed goal is not a failure, a wrong result is.
// The cases run in three groups, one test file each, so the fast lane's two workers share them
// (one run of all fourteen took 93 s, the lane's long tail).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { CASES } from '../../bench/cases/index.ts';
import { ROOT } from '../cli/run-cli.ts';

/** The groups, about a third of the quick run's time each; together every case exactly once. */
export const QUICK_GROUPS = [
  ['fleet', 'takeover', 'plan', 'resync'],
  ['failover', 'rpo', 'delta', 'at-rest-cipher'],
  ['rpo-continuous', 'primary-amp', 'bandwidth', 'replica-amp', 'initial', 'at-rest'],
] as const;

/** Declares the test that runs `npm run bench -- --quick --only <group>` and checks its report. */
export function quickRun(group: readonly string[]): void {
  const out = mkdtempSync(join(tmpdir(), 'drsite-bench-quick-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  test(`npm run bench -- --quick --only ${group.join(',')}: every case runs, checks its result and is reported`, async () => {
    const args = [join(ROOT, 'bench', 'run.ts'), '--quick', '--only', group.join(','), '--out', out];
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, log.slice(-4000)).toBe(0);

    const run = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as {
      quick: boolean;
      cases: { name: string; error?: string; result?: { status: string } }[];
    };
    expect(run.quick).toBe(true);
    const expected = CASES.filter((c) => group.includes(c.name));
    expect(run.cases.map((c) => c.name)).toEqual(expected.map((c) => c.name));
    for (const c of run.cases) {
      expect(c.error, c.name).toBeUndefined();
      expect(c.result?.status, c.name).toBe('ok');
    }
    const md = readFileSync(join(out, 'RESULTS.md'), 'utf8');
    for (const c of expected) expect(md).toContain(c.title);
  }, 600_000);
}
