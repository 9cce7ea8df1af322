// `npm test`: every test, in lanes (vitest.config.ts says what each holds and why). The fast lane
// first on both cores; then the qemu and libvirt lanes beside each other (one file at a time
// each: one guest booting per lane); then the serial lane alone. Every lane runs even when an
// earlier one failed, so one run reports every failure; the exit status is non-zero if any did.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const vitest = join(import.meta.dirname, '..', 'node_modules', 'vitest', 'vitest.mjs');
const extra = process.argv.slice(2);

interface Lane {
  name: string;
  code: number;
  seconds: number;
}

/** Runs one lane; a lane that streams writes through, one that does not prints when it ends. */
function lane(name: string, args: string[], stream: boolean): Promise<Lane> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [vitest, 'run', '--project', name, ...args, ...extra], { stdio: ['ignore', stream ? 'inherit' : 'pipe', stream ? 'inherit' : 'pipe'] });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output += d));
    child.stderr?.on('data', (d: Buffer) => (output += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (!stream) process.stdout.write(`\n===== ${name} lane (ran beside the one above) =====\n${output}`);
      resolve({ name, code: code ?? (signal ? 1 : 0), seconds: (Date.now() - started) / 1000 });
    });
  });
}

const serial = ['--no-file-parallelism'];
const lanes: Lane[] = [];
lanes.push(await lane('fast', [], true));
lanes.push(...(await Promise.all([lane('qemu', serial, true), lane('libvirt', serial, false)])));
lanes.push(await lane('serial', serial, true));

console.log(`\nlanes: ${lanes.map((l) => `${l.name} ${l.code === 0 ? 'passed' : 'FAILED'} (${l.seconds.toFixed(0)} s)`).join(', ')}`);
process.exit(lanes.some((l) => l.code !== 0) ? 1 : 0);
