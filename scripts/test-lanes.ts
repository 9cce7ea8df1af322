// `npm test`: every test, in lanes (vitest.config.ts says what each holds and why). The fast lane
// first on both cores; then two tracks side by side, one per core: the qemu lane on one and the
// libvirt lane on the other (one file at a time each: one guest booting per track), and whichever
// track is free takes the next serial file, so a serial file runs beside at most one other file.
// Every lane runs even when an earlier one failed, so one run reports every failure; the exit
// status is non-zero if any did.
// A failed lane's FAIL lines and their errors are printed again at the very end: a CI record that
// keeps only the tail of the output still says what failed and why.
import { spawn } from 'node:child_process';
import { globSync } from 'node:fs';
import { join } from 'node:path';

const vitest = join(import.meta.dirname, '..', 'node_modules', 'vitest', 'vitest.mjs');
const extra = process.argv.slice(2);

interface Lane {
  name: string;
  code: number;
  seconds: number;
  output: string;
}

/** Runs one lane (or some of its files); one that streams writes through, one that does not prints when it ends. */
function lane(name: string, args: string[], stream: boolean, files: string[] = []): Promise<Lane> {
  const started = Date.now();
    return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [vitest, 'run', '--project', name, ...args, ...extra, ...files], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const take = (to: NodeJS.WriteStream) => (d: Buffer) => {
      output += d;
      if (stream) to.write(d);
    };
    child.stdout.on('data', take(process.stdout));
    child.stderr.on('data', take(process.stderr));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (!stream) process.stdout.write(`\n===== ${name} lane${files.length ? ` (${files.join(' ')})` : ''}, ran beside the one above =====\n${output}`);
      resolve({ name, code: code ?? (signal ? 1 : 0), seconds: (Date.now() - started) / 1000, output });
    });
  });
}

const serial = ['--no-file-parallelism'];
// A filter given on the command line (`npm test -- kill`) goes to vitest as it is; only the full
// run splits the serial lane into its files.
const serialFiles = extra.length ? [] : globSync('test/**/*.serial.test.ts').sort();
const serialRuns: Lane[] = [];
let serialStarted = 0;

/**
 * One track: its guest lane, then serial files from the shared queue until none is left. A free
 * track takes half of what is left (one vitest start costs seconds), so the other track, when it
 * frees up, still finds work.
 */
async function track(first: string, stream: boolean): Promise<Lane> {
  const guests = await lane(first, serial, stream);
  while (serialFiles.length) {
    serialStarted ||= Date.now();
    const batch = serialFiles.splice(0, Math.ceil(serialFiles.length / 2));
    serialRuns.push(await lane('serial', serial, stream, batch));
  }
  return guests;
}

const lanes: Lane[] = [];
lanes.push(await lane('fast', [], true));
lanes.push(...(await Promise.all([track('qemu', true), track('libvirt', false)])));
if (extra.length) lanes.push(await lane('serial', serial, true));
else {
  const code = serialRuns.some((r) => r.code !== 0) ? 1 : 0;
  lanes.push({ name: 'serial', code, seconds: (Date.now() - serialStarted) / 1000, output: serialRuns.map((r) => r.output).join('\n') });
}

/** The failure report of a lane's output: from each ` FAIL ` line up to the next separator, capped. */
function failures(output: string): string {
  // eslint-disable-next-line no-control-regex
  const lines = output.replace(/\x1b\[[0-9;]*m/g, '').split('\n');
  const kept: string[] = [];
  let inside = false;
  for (const line of lines) {
    if (/^\s*FAIL\s/.test(line) || /Unhandled (Error|Rejection)/.test(line)) inside = true;
    else if (/^⎯{4,}/.test(line)) inside = false;
    if (inside && line.trim() && !/^\s+at /.test(line)) kept.push(line.slice(0, 300));
  }
  return (kept.length > 60 ? [...kept.slice(0, 60), `… ${kept.length - 60} more lines above`] : kept).join('\n');
}

for (const l of lanes.filter((l) => l.code !== 0)) {
  console.log(`\n===== ${l.name} lane FAILED: what failed, again =====\n${failures(l.output) || l.output.split('\n').slice(-40).join('\n')}`);
}
console.log(`\nlanes: ${lanes.map((l) => `${l.name} ${l.code === 0 ? 'passed' : 'FAILED'} (${l.seconds.toFixed(0)} s)`).join(', ')}`);
process.exit(lanes.some((l) => l.code !== 0) ? 1 : 0);
