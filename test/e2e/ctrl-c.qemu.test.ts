// Ctrl-C on `drsite run examples/qemu`, the real CLI on a terminal (a pty from `script`): it used to
// linger about a minute after a planned failover (a leftover 60 s timer) and then needed a second
// Ctrl-C. Now the first one stops it within seconds, a second one exits at once, and on the way out
// it names the guests that keep running and the command that stops them, which works.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { RECONCILE_LEASE } from '../../src/reconciler/reconcile-lease.ts';
import { DRSITE } from '../cli/run-cli.ts';
import { testGuest } from '../agent/hypervisor/qemu/guest.ts';
import { planJob, quickstart, vmStatus, waitFor, type Quickstart } from './helpers.ts';

/** Generous: "not hanging". The old behaviour took ~58 s. */
const EXIT_BOUND_MS = 15_000;

interface OnPty {
  script: ChildProcess;
  output(): string;
  /** The drsite process inside the pty. */
  pid(): Promise<number>;
  exited: Promise<number | null>;
}

const plain = (s: string) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');

const started: OnPty[] = [];

function runOnPty(q: Quickstart): OnPty {
  const cmd = `exec ${process.execPath} ${DRSITE} run qs --state-dir ${q.state} --poll 500ms`;
  const script = spawn('script', ['-qefc', cmd, '/dev/null'], { cwd: q.root, env: { ...process.env, ...q.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  script.stdout!.on('data', (d) => (out += d));
  script.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => script.once('exit', (code) => resolve(code)));
  const run: OnPty = {
    script,
    output: () => plain(out),
    exited,
    pid: () =>
      waitFor('drsite inside the pty', () => {
        const stat = `/proc/${script.pid}/task/${script.pid}/children`;
        const child = existsSync(stat) ? Number.parseInt(readFileSync(stat, 'utf8'), 10) : NaN;
        return child > 0 ? child : undefined;
      }, 10_000),
  };
  started.push(run);
  return run;
}

const within = <T>(ms: number, p: Promise<T>, what: string) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms))]);

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

let q: Quickstart;
beforeAll(async () => {
  await testGuest();
  q = await quickstart('qemu');
}, 120_000);
afterAll(async () => {
  // A failed test can leave a run going: stop it (and its pty) before the guests and the files go.
  for (const r of started) {
    if (r.script.exitCode !== null || r.script.signalCode !== null) continue;
    const pid = await r.pid().catch(() => undefined);
    if (pid) process.kill(pid, 'SIGKILL');
    r.script.kill('SIGKILL');
  }
  q?.cleanup();
});

test('Ctrl-C after a planned failover stops within seconds and names the guest that keeps running, with the command that stops it', async () => {
  const first = runOnPty(q);
  const serial = (site: string) => join(q.state, 'sites', site, 'vms', 'web-01', 'serial.log');
  await waitFor('web-01 Replicating', () => q.readVault(vmStatus).some((s) => s.state === 'Replicating'), 60_000, first.output);
  // Booted, so it answers the ACPI power button of the planned failover.
  await waitFor('web-01 booted on site-a', () => existsSync(serial('site-a')) && /DRSITE booted/.test(readFileSync(serial('site-a'), 'utf8')), 60_000, first.output);
  q.setFailover(['id: move-1', 'type: planned', 'commit: true']);
  const job = await waitFor('failover move-1 to end', () => {
    const j = q.readVault((v) => planJob(v, 'move-1'));
    return j && j.state !== 'Running' && j.state !== 'Waiting' ? j : undefined;
  }, 60_000, first.output);
  expect(job.state, JSON.stringify(job.error)).toBe('Succeeded');
  await waitFor('web-01 started on site-b', () => existsSync(serial('site-b')) && existsSync(join(q.state, 'sites', 'site-b', 'vms', 'web-01', 'qemu.pid')), 30_000, first.output);

  process.kill(await first.pid(), 'SIGINT');
  const code = await within(EXIT_BOUND_MS, first.exited, 'drsite run exiting after one Ctrl-C');
  const out = first.output();
  expect([0, 130], out).toContain(code);
  expect(out).toContain('SIGINT: stopping after the pass in progress');
  const line = /guests keep running after drsite exits \(by design: the next drsite run adopts them\): web-01 on site-b \(pid (\d+)\)\nto stop them: kill -KILL (\d+)/.exec(out);
  expect(line, out.slice(-2000)).not.toBeNull();
  guest = Number(line![1]);
  expect(Number(line![2])).toBe(guest);
  expect(alive(guest)).toBe(true); // guests keep running by design

}, 120_000);

/** Test 1's guest: web-01 running on site-b, left there by the first run. */
let guest: number;

test('Ctrl-C while a recovery plan waits on a script: out after the grace period; a second Ctrl-C exits at once; the next run finishes the plan', async () => {
  const mark = join(q.root, 'slow-started');
  writeFileSync(join(q.qs, 'slow.sh'), `#!/bin/sh\necho started >> ${mark}\nsleep 30\n`, { mode: 0o755 });
  const plan = readFileSync(join(q.qs, 'plan.yaml'), 'utf8').replace(/\n  failover:[\s\S]*$/, '\n');
  const withScript = plan.replace('      vms: [web-01]\n', '      vms: [web-01]\n      before:\n        - name: slow\n          script:\n            path: slow.sh\n            timeout: 60s\n');
  expect(withScript).toContain('path: slow.sh');
  q.setFailover(['id: drill-1', 'type: test'], withScript);

  // One Ctrl-C while the pass waits on the script: it does not wait 30 s for it.
  const second = runOnPty(q);
  await waitFor('the script to start', () => existsSync(mark), 60_000, second.output);
  process.kill(await second.pid(), 'SIGINT');
  expect(await within(EXIT_BOUND_MS, second.exited, 'drsite run exiting after one Ctrl-C')).toBe(130);
  expect(second.output()).toContain('the pass in progress did not end within 5s');
  expect(second.output()).toMatch(new RegExp(`to stop them: kill -KILL [\\d ]*\\b${guest}\\b`));

  // The next run waits on the same script (still running: it is not started twice); Ctrl-C twice.
  const third = runOnPty(q);
  const pid = await third.pid();
  await waitFor('the next run to hold the reconcile lease', () => q.readVault((v) => v.getLease(RECONCILE_LEASE)?.pid === pid), 30_000, third.output);
  // Its sites open (a signal before that exits at once), then its first pass resumes the plan and
  // waits on the script (about 18 s of it left).
  await new Promise((r) => setTimeout(r, 5000));
  process.kill(pid, 'SIGINT');
  await waitFor('the first Ctrl-C to be taken', () => /SIGINT: stopping/.test(third.output()), 5000, third.output);
  process.kill(pid, 'SIGINT');
  expect(await within(EXIT_BOUND_MS, third.exited, 'drsite run exiting after two Ctrl-C')).toBe(130);
  expect(third.output()).toContain('SIGINT again: exiting at once');

  // Nothing was lost: a run left alone finishes the plan from its journal, the script's one run included.
  const fourth = runOnPty(q);
  const job = await waitFor('drill-1 to end', () => {
    const j = q.readVault((v) => planJob(v, 'drill-1'));
    return j && j.state !== 'Running' && j.state !== 'Waiting' ? j : undefined;
  }, 60_000, fourth.output);
  expect(job.state, JSON.stringify(job.error)).toBe('Succeeded');
  expect(readFileSync(mark, 'utf8')).toBe('started\n');
  process.kill(await fourth.pid(), 'SIGINT');
  expect([0, 130]).toContain(await within(EXIT_BOUND_MS, fourth.exited, 'drsite run exiting after one Ctrl-C'));

  // The printed command stops the orphaned guests.
  const stop = /to stop them: kill -KILL ([\d ]+)/.exec(fourth.output());
  expect(stop, fourth.output().slice(-2000)).not.toBeNull();
  const pids = stop![1].trim().split(' ').map(Number);
  expect(pids).toContain(guest);
  for (const p of pids) process.kill(p, 'SIGKILL');
  await waitFor('the guests to be gone', () => pids.every((p) => !alive(p)), 5000);
}, 150_000);
