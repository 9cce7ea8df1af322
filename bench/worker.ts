// Runs one bench case in its own process (so its peak memory and CPU are its own) and writes the
// CaseResult as JSON. Exit 2 on a correctness failure, 1 on any other error.
// Run by bench/run.ts: node bench/worker.ts <case> <result.json> <workDir> <runs> <quick 0|1> <tools,comma>
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { CASES } from './cases/index.ts';
import { CorrectnessError } from './lib/types.ts';

const [name, resultPath, workDir, runs, quick, tools] = process.argv.slice(2);
const c = CASES.find((x) => x.name === name);
if (!c) {
  console.error(`no bench case ${name}; cases: ${CASES.map((x) => x.name).join(', ')}`);
  process.exit(1);
}
await rm(workDir, { recursive: true, force: true });
await mkdir(workDir, { recursive: true });
try {
  const result = await c.run({
    quick: quick === '1',
    runs: Number(runs),
    workDir,
    tools: new Set(tools ? tools.split(',') : []),
    log: (m) => console.error(`  [${name}] ${m}`),
  });
  await writeFile(resultPath, JSON.stringify({ result }));
  process.exitCode = 0;
} catch (e) {
  const correctness = e instanceof CorrectnessError;
  await writeFile(resultPath, JSON.stringify({ error: `${correctness ? 'CORRECTNESS FAILURE: ' : ''}${(e as Error).stack ?? String(e)}`, correctness }));
  console.error(`  [${name}] ${correctness ? 'CORRECTNESS FAILURE' : 'error'}: ${(e as Error).stack ?? String(e)}`);
  process.exitCode = correctness ? 2 : 1;
} finally {
  await rm(workDir, { recursive: true, force: true });
}
// Helper processes and sockets a case forgot must not keep a finished case alive.
setTimeout(() => process.exit(), 1000).unref();
