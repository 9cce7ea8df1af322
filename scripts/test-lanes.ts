// `npm test`: every test, in lanes (vitest.config.ts says what each holds and why). The fast lane
// first on both cores; then the qemu and libvirt lanes beside each other (one file at a time
// each: one guest booting per lane); then the serial lane alone. Every lane runs even when an
// earlier one failed, so one run reports every failure; the exit status is non-zero if any did.
// A failed lane's FAIL lines and their errors are printed again at the very end: a CI record that
// keeps only the tail of the output still says what failed and why.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const vitest = join(import.meta.dirname, '..', 'node_modules', 'vitest', 'vitest.mjs');
const extra = process.argv.slice(2);

interface Lane {
  name: string;
  code: number;
  seconds: number;
  output: string;
}

/** Runs one lane; a lane that streams writes through, one that does not prints when it ends. */
function lane(name: string, args: string[], stream: boolean): Promise<Lane> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [vitest, 'run', '--project', name, ...args, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const take = (to: NodeJS.WriteStream) => (d: Buffer) => {
      output += d;
      if (stream) to.write(d);
    };
    child.stdout.on('data', take(process.stdout));
    child.stderr.on('data', take(process.stderr));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (!stream) process.stdout.write(`\n===== ${name} lane (ran beside the one above) =====\n${output}`);
      resolve({ name, code: code ?? (signal ? 1 : 0), seconds: (Date.now() - started) / 1000, output });
    });
  });
}

const serial = ['--no-file-parallelism'];
const lanes: Lane[] = [];
lanes.push(await lane('fast', [], true));
lanes.push(...(await Promise.all([lane('qemu', serial, true), lane('libvirt', serial, false)])));
lanes.push(await lane('serial', serial, true));

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
