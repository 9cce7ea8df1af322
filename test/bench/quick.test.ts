// The benchmark suite's smoke run, `npm run bench -- --quick`, as CI runs it through `npm test`:
// every case still runs on small sizes and verifies its own results (byte equality, points
// readable). Speed is never judged here; a missed goal is not a failure, a wrong result is.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { CASES } from '../../bench/cases/index.ts';
import { ROOT } from '../cli/run-cli.ts';

const out = mkdtempSync(join(tmpdir(), 'drsite-bench-quick-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

test('npm run bench -- --quick: every case runs, checks its result and is reported', async () => {
  const child = spawn(process.execPath, [join(ROOT, 'bench', 'run.ts'), '--quick', '--out', out], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  expect(code, log.slice(-4000)).toBe(0);

  const run = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as {
    quick: boolean;
    cases: { name: string; error?: string; result?: { status: string; scenarios?: { subjects: { ours?: boolean }[] }[] } }[];
  };
  expect(run.quick).toBe(true);
  expect(run.cases.map((c) => c.name)).toEqual(CASES.map((c) => c.name));
  for (const c of run.cases) {
    expect(c.error, c.name).toBeUndefined();
    expect(c.result?.status, c.name).toBe('ok');
  }
  const md = readFileSync(join(out, 'RESULTS.md'), 'utf8');
  for (const c of CASES) expect(md).toContain(c.title);
}, 600_000);
