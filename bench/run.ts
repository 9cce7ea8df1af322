// `npm run bench`: runs every case (each in its own process), then writes bench/RESULTS.md and
// bench/results.json. `--quick` is the CI smoke run (small sizes, about a minute) and never fails
// on speed; any run exits non-zero only when a result is not byte-identical or a case crashes.
// Options: --quick, --only <case[,case]>, --runs <n> (>= 3; --quick alone runs each subject once), --out <dir> (default: bench/ for a
// full run of every case, bench/.work/ otherwise, so a partial run never replaces RESULTS.md).
import { spawn } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { CASES } from './cases/index.ts';
import { machineInfo } from './lib/machine.ts';
import { renderResults } from './lib/results-md.ts';
import type { CaseRecord, RunRecord } from './lib/results-md.ts';
import { ensureTools } from './lib/tools.ts';
import type { CaseResult } from './lib/types.ts';

const BENCH = fileURLToPath(new URL('.', import.meta.url));
const WORK = join(BENCH, '.work');

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    runs: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(`usage: npm run bench -- [--quick] [--only ${CASES.map((c) => c.name).join(',')}] [--runs N] [--out DIR]`);
  process.exit(0);
}
const quick = values.quick!;
// The smoke run checks results, not speed: one run per subject unless --runs says otherwise.
const runs = quick && values.runs === undefined ? 1 : Math.max(3, Number(values.runs ?? 3));
const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean);
const unknown = only?.filter((n) => !CASES.some((c) => c.name === n)) ?? [];
if (unknown.length) {
  console.error(`unknown case(s) ${unknown.join(', ')}; cases: ${CASES.map((c) => c.name).join(', ')}`);
  process.exit(1);
}
const selected = CASES.filter((c) => !only || only.includes(c.name));
const outDir = values.out ?? (quick || only ? WORK : BENCH);
const log = (m: string) => console.error(m);

await mkdir(WORK, { recursive: true });
const tools = ensureTools(log);
const t0 = performance.now();
const records: CaseRecord[] = [];
let failed = false;

function runWorker(name: string, resultPath: string, workDir: string): Promise<number | null> {
  const args = [join(BENCH, 'worker.ts'), name, resultPath, workDir, String(runs), quick ? '1' : '0', [...tools].join(',')];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code));
  });
}

for (const c of selected) {
  log(`bench ${c.name}: ${c.title}${quick ? ' (quick)' : ''}`);
  const resultPath = join(WORK, `${c.name}.result.json`);
  await rm(resultPath, { force: true });
  const start = performance.now();
  const code = await runWorker(c.name, resultPath, join(WORK, c.name));
  const seconds = (performance.now() - start) / 1000;
  let parsed: { result?: CaseResult; error?: string };
  try {
    parsed = JSON.parse(await readFile(resultPath, 'utf8'));
  } catch {
    parsed = { error: `case process exited with ${code} and wrote no result` };
  }
  await rm(resultPath, { force: true });
  if (parsed.error || code !== 0) failed = true;
  records.push({ name: c.name, title: c.title, goal: c.goal, seconds, ...(parsed.error ? { error: parsed.error } : { result: parsed.result }) });
  log(`bench ${c.name}: ${parsed.error ? 'FAILED' : parsed.result?.status} in ${seconds.toFixed(1)} s`);
}

const run: RunRecord = {
  date: new Date().toISOString(),
  quick,
  runs,
  machine: machineInfo(WORK),
  seconds: (performance.now() - t0) / 1000,
  cases: records,
};
await mkdir(outDir, { recursive: true });
const md = renderResults(run);
await writeFile(join(outDir, 'RESULTS.md'), md);
await writeFile(join(outDir, 'results.json'), `${JSON.stringify(run, null, 2)}\n`);
console.log(md);
log(`wrote ${join(outDir, 'RESULTS.md')} and results.json`);
// Missed goals are reported, never fatal: only a wrong result or a crashed case fails the run.
process.exit(failed ? 1 : 0);
