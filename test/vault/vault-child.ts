// A second process for the vault's multi-process tests (spawned with process.execPath; not a test
// file itself). Progress goes to stdout with writeSync so the parent sees it before we block or die.

import { readSync, writeSync } from 'node:fs';
import { Vault } from '../../src/vault/vault.ts';

const STEPS_PER_JOB = 5; // processes.test.ts repeats it (importing this file would run it)

const [mode, path, arg] = process.argv.slice(2);
const say = (line: string) => writeSync(1, line + '\n');

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** One job, its steps and an event, as one transaction: the unit the tests check for atomicity. */
function writeJob(v: Vault, i: number): void {
  v.transaction(() => {
    const job = v.createJob({ type: 'EnableProtection', target: `ProtectedVM/vm-${i}` });
    for (let s = 0; s < STEPS_PER_JOB; s++) {
      v.startStep(job.id, `step-${s}`);
      v.endStep(job.id, `step-${s}`, { state: 'Succeeded', output: { s } });
    }
    v.finishJob(job.id, 'Succeeded');
    v.recordEvent({ kind: 'ProtectedVM', name: `vm-${i}`, type: 'Normal', reason: 'ProtectionEnabled', message: job.id });
  });
}

function waitForLine(): void {
  const buf = Buffer.alloc(64);
  for (;;) {
    try {
      if (readSync(0, buf, 0, buf.length, null) > 0) return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
    sleepSync(5);
  }
}

const v = Vault.open(path);
switch (mode) {
  case 'open':
    say(`version ${v.schemaVersion}`);
    break;
  case 'stream': {
    // Commits jobs until killed (or `arg` jobs), reporting each commit after it is made.
    const n = arg === undefined ? Infinity : Number(arg);
    for (let i = 0; i < n; i++) {
      writeJob(v, i);
      say(`committed ${i}`);
    }
    say('done');
    break;
  }
  case 'handshake':
    // Commits job 0; holds job 1 in an open transaction until the parent writes a line.
    writeJob(v, 0);
    say('committed 0');
    v.transaction(() => {
      writeJob(v, 1);
      say('holding');
      waitForLine();
    });
    say('committed 1');
    break;
  case 'hold-big':
    // A transaction larger than SQLite's page cache, so uncommitted pages spill into the WAL
    // file; then we block inside it until SIGKILL.
    v.transaction(() => {
      v.recordDesired('ProtectedVM', 'big', { blob: 'x'.repeat(1000) });
      v.markPending('half-done', { by: 'child' });
      const job = v.createJob({ type: 'Resynchronize', target: 'ProtectedVM/big' });
      for (let s = 0; s < 2000; s++) {
        v.startStep(job.id, `step-${s}`);
        v.endStep(job.id, `step-${s}`, { state: 'Succeeded', output: { pad: `${s}`.padEnd(2000, '.') } });
      }
      say('holding');
      for (;;) sleepSync(1000);
    });
    break;
  default:
    throw new Error(`unknown mode ${mode}`);
}
v.close();
