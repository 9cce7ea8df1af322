// What a pipeline and an operator are told, through the real `drsite` command as separate
// processes on a copy of the quickstart: `run --until converged` on a terminal (a pty through
// `script`) ends with its verdict and table; `synth` works with its default --out; a declaration
// the state refuses (failback while a planned failover waits for commit) fails plan and apply with
// the reason in text, JSON, status and events; every job is an event of its VM or plan; and a
// commit plus failback leave no spurious ChangePolicy behind.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { DRSITE } from '../cli/run-cli.ts';
import { quickstart, vmStatus, type Quickstart } from './helpers.ts';

let q: Quickstart;
beforeAll(async () => {
  q = await quickstart();
});
afterAll(() => q?.cleanup());

/** Runs drsite under a pseudo-terminal (util-linux `script`), so stdout.isTTY is true in it. */
function onTerminal(args: string[], timeoutMs = 90_000): Promise<{ code: number | null; out: string }> {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const command = [process.execPath, DRSITE, ...args].map(quote).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qefc', command, '/dev/null'], { cwd: q.root, env: { ...process.env, ...q.env, TERM: 'xterm' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

const plain = (s: string) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');

test('on a terminal, run --until converged ends with the converged line and the status table', async () => {
  const r = await onTerminal(['run', 'qs', '--state-dir', q.state, '--until', 'converged', '--poll', '500ms']);
  const out = plain(r.out);
  expect(r.code, out.slice(-2000)).toBe(0);
  expect(out).toMatch(/converged in [\d.]+s: every ProtectedVM is Replicating with health Normal/);
  expect(out).toMatch(/│ web-01 +│ site-a -> site-b +│ site-a=Primary site-b=Replica +│ Replicating +│ Normal/);
  // The table comes after the verdict.
  expect(out.lastIndexOf('│ db-01')).toBeGreaterThan(out.indexOf('converged in'));
});

test('synth --target azure-site-recovery without --out writes under .drsite/synth/asr', async () => {
  const r = await q.cli(['synth', '--target', 'azure-site-recovery', 'qs']);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/Wrote \.drsite\/synth\/asr\/stacks\/azure-site-recovery\/cdk\.tf\.json: \d+ resources/);
  expect(existsSync(join(q.root, '.drsite', 'synth', 'asr', 'stacks', 'azure-site-recovery', 'cdk.tf.json'))).toBe(true);
});

test('a refused declaration fails plan and apply, with the reason in text, JSON, status and events', async () => {
  q.setFailover(['id: move-1', 'type: planned']);
  const moved = await q.cli(['apply', 'qs']);
  expect(moved.code, moved.stdout + moved.stderr).toBe(0);
  expect(q.readVault(vmStatus).map((s) => s.state)).toEqual(['FailoverWaitingCompletion', 'FailoverWaitingCompletion']);

  // Failback while the planned failover waits for commit or cancel: refused.
  q.setFailover(['id: back-1', 'type: failback']);
  const refused = await q.cli(['apply', 'qs']);
  expect(refused.code).toBe(1);
  expect(refused.stdout).not.toMatch(/No changes/);
  expect(refused.stdout).toMatch(/^Warning \[failover-refused\] RecoveryPlan\/quickstart: failover back-1 \(failback\) refused: db-01 is FailoverWaitingCompletion: commit or cancel that failover first$/m);
  expect(refused.stderr).toMatch(/^error: RecoveryPlan\/quickstart: failover back-1 \(failback\) refused: web-01 is FailoverWaitingCompletion/m);
  expect(refused.stderr).toMatch(/2 declared actions not met/);

  const plan = await q.cli(['plan', 'qs', '--detailed-exitcode']);
  expect(plan.code).toBe(1);
  expect(plan.stdout).toMatch(/^Refused: 2 declared actions cannot run/m);
  const planJson = JSON.parse((await q.cli(['plan', 'qs', '-o', 'json'])).stdout) as { refused: { code: string }[] };
  expect(planJson.refused.map((w) => w.code)).toEqual(['failover-refused', 'failover-refused']);

  const applyJson = await q.cli(['apply', 'qs', '-o', 'json']);
  expect(applyJson.code).toBe(1);
  const aj = JSON.parse(applyJson.stdout) as { ok: boolean; refused: { code: string; target: { name: string }; message: string }[] };
  expect(aj.ok).toBe(false);
  expect(aj.refused.map((w) => [w.code, w.target.name])).toEqual([['failover-refused', 'quickstart'], ['failover-refused', 'quickstart']]);

  const status = await q.cli(['status']);
  expect(status.stdout).toMatch(/RecoveryPlan quickstart: declared failover refused:\n {2}failover back-1 \(failback\) refused: db-01 is FailoverWaitingCompletion/);
  const rows = JSON.parse((await q.cli(['status', '-o', 'json'])).stdout) as { name: string; declarations?: { recoveryPlan: string; status: string; reason: string }[] }[];
  for (const r of rows) expect(r.declarations).toEqual([expect.objectContaining({ recoveryPlan: 'quickstart', status: 'False', reason: 'Refused' })]);

  const events = await q.cli(['events', 'quickstart', '-o', 'json']);
  const planEvents = (JSON.parse(events.stdout) as { reason: string; kind: string; message: string }[]);
  expect(planEvents.find((e) => e.reason === 'FailoverRefused')?.message).toMatch(/back-1 \(failback\) refused/);
  // The planned failover's run is there too: the plan job, its scripts.
  expect(planEvents.map((e) => e.reason)).toEqual(expect.arrayContaining(['RecoveryPlanStarted', 'RecoveryPlanSucceeded', 'ScriptSucceeded']));
  const vmEvents = (JSON.parse((await q.cli(['events', 'web-01', '-o', 'json'])).stdout) as { reason: string; kind: string }[]).map((e) => e.reason);
  expect(vmEvents).toEqual(expect.arrayContaining(['EnableProtectionStarted', 'EnableProtectionSucceeded', 'InitialReplicationSucceeded', 'PlannedFailoverStarted', 'PlannedFailoverSucceeded']));
}, 180_000);

test('commit, then failback: home again, no ChangePolicy job, and plan says No changes', async () => {
  q.setFailover(['id: commit-1', 'type: commit']);
  const committed = await q.cli(['apply', 'qs']);
  expect(committed.code, committed.stdout + committed.stderr).toBe(0);
  q.setFailover(['id: back-2', 'type: failback']);
  const back = await q.cli(['apply', 'qs']);
  expect(back.code, back.stdout + back.stderr).toBe(0);
  expect(q.readVault(vmStatus).map((s) => [s.name, s.state, s.direction?.primary])).toEqual([['db-01', 'Replicating', 'site-a'], ['web-01', 'Replicating', 'site-a']]);
  // A few passes more: nothing to change, and the policy is not "changed" by the reverses.
  for (let i = 0; i < 2; i++) {
    const again = await q.cli(['apply', 'qs']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).not.toMatch(/change-policy/);
  }
  expect(q.readVault((v) => v.listJobs({ type: 'ChangePolicy', limit: 10 }))).toEqual([]);
  const plan = await q.cli(['plan', 'qs', '--detailed-exitcode']);
  expect(plan.code, plan.stdout).toBe(0);
  expect(plan.stdout).toMatch(/^No changes\. The observed state matches the declarations\.$/m);
  // The operator's view of it: the commit and the failback are events of each VM.
  const vmEvents = (JSON.parse((await q.cli(['events', 'db-01', '-o', 'json'])).stdout) as { reason: string }[]).map((e) => e.reason);
  expect(vmEvents).toEqual(expect.arrayContaining(['CommitFailoverSucceeded', 'ReverseReplicationSucceeded']));
  // The failback is a planned failover back home: the second one of db-01.
  expect(vmEvents.filter((r) => r === 'PlannedFailoverSucceeded')).toHaveLength(2);
}, 240_000);
