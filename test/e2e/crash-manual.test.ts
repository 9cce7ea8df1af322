// A reconciler killed with SIGKILL in the middle of a recovery plan, and restarted, finishes the
// plan without running any step twice (each script appends to the action log exactly once); a
// manual action pauses a plan until `drsite continue`.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { planJob, quickstart, startRun, vmStatus, waitFor, type Quickstart, type Running } from './helpers.ts';

let q: Quickstart;
let run: Running | undefined;
let planText: string;
beforeAll(async () => {
  q = await quickstart();
  // A slow script before the first group: the reconciler is killed while it runs.
  writeFileSync(join(q.qs, 'scripts', 'slow.sh'), '#!/bin/sh\necho "slow-start" >> "$DRSITE_ACTION_LOG"\nsleep 3\necho "slow-end" >> "$DRSITE_ACTION_LOG"\n');
  chmodSync(join(q.qs, 'scripts', 'slow.sh'), 0o755);
  planText = readFileSync(join(q.qs, 'plan.yaml'), 'utf8').replace(
    '      vms: [db-01]\n',
    '      vms: [db-01]\n      before:\n        - name: slow\n          script:\n            path: scripts/slow.sh\n        - name: confirm\n          failoverTypes: [planned]\n          manual:\n            message: never for a test failover\n',
  );
  const r = await q.cli(['run', 'qs', '--until', 'converged']);
  expect(r.code, r.stdout + r.stderr).toBe(0);
}, 90_000);
afterAll(async () => {
  await run?.stop();
  q?.cleanup();
});

const ended = (id: string, r: Running) =>
  waitFor(`failover ${id} to end`, () => {
    const j = q.readVault((v) => planJob(v, id));
    return j && j.state !== 'Running' && j.state !== 'Waiting' ? j : undefined;
  }, 60_000, r.output);

test('kill -9 during a recovery plan: the restarted reconciler finishes it, every step once', async () => {
  q.setFailover(['id: crash-1', 'type: test'], planText);
  const first = startRun(q);
  await waitFor('the slow script to start', () => q.actions().includes('slow-start'), 30_000, first.output);
  expect(await first.stop('SIGKILL')).toBe(null);
  expect(q.readVault((v) => planJob(v, 'crash-1')!.state)).toBe('Running');

  run = startRun(q);
  const job = await ended('crash-1', run);
  expect(job.state, JSON.stringify(job.error)).toBe('Succeeded');
  const lines = q.actions().map((l) => /args=\[([^\]]*)\]/.exec(l)?.[1] ?? l);
  expect(lines).toEqual(['slow-start', 'slow-end', 'database-up', 'web-starting', 'web-up']);
  const slow = job.steps.find((s) => s.name === 'group-1/before/slow')!;
  expect(slow.state).toBe('Succeeded');
  expect(slow.output).toMatchObject({ exitCode: 0, resumed: true });
  // The manual action is only for planned failovers: filtered out here.
  expect(job.steps.some((s) => s.name.includes('confirm'))).toBe(false);
  expect(job.children.map((c) => [c.target, c.state])).toEqual([['ProtectedVM/db-01', 'Succeeded'], ['ProtectedVM/web-01', 'Succeeded']]);
  await waitFor('test VMs recorded', () => q.readVault(vmStatus).every((s) => s.testVms.length === 1), 10_000);
  expect(q.readVault(vmStatus).map((s) => s.testVms)).toEqual([['db-01-Test'], ['web-01-Test']]);
}, 120_000);

test('a manual action pauses the plan until drsite continue', async () => {
  q.setFailover(['id: crash-2', 'type: test', 'cleanupTest: true'], planText);
  expect((await ended('crash-2', run!)).state).toBe('Succeeded');
  const manualPlan = planText.replace('failoverTypes: [planned]', 'failoverTypes: [test]');
  q.setFailover(['id: manual-1', 'type: test'], manualPlan);
  const waiting = await waitFor('the plan to wait', () => {
    const j = q.readVault((v) => planJob(v, 'manual-1'));
    return j?.state === 'Waiting' ? j : undefined;
  }, 30_000, run!.output);
  expect(waiting.steps.at(-1)).toMatchObject({ name: 'group-1/before/confirm', state: 'Running' });
  expect(q.readVault((v) => v.getLastAction('RecoveryPlan', 'quickstart'))).toMatchObject({ id: 'manual-1', state: 'Waiting' });
  await new Promise((r) => setTimeout(r, 1500));
  expect(q.readVault((v) => planJob(v, 'manual-1')!.state)).toBe('Waiting');
  expect(q.readVault(vmStatus).every((s) => s.testVms.length === 0)).toBe(true);

  const c = await q.cli(['continue', 'quickstart']);
  expect(c.code, c.stderr).toBe(0);
  const job = await ended('manual-1', run!);
  expect(job.state, JSON.stringify(job.error)).toBe('Succeeded');
  expect(job.steps.find((s) => s.name === 'group-1/before/confirm')).toMatchObject({ state: 'Succeeded', output: { continued: true } });
  await waitFor('test VMs recorded', () => q.readVault(vmStatus).every((s) => s.testVms.length === 1), 10_000);
  expect(q.readVault(vmStatus).map((s) => s.testVms)).toEqual([['db-01-Test'], ['web-01-Test']]);
  const again = await q.cli(['continue', 'quickstart']);
  expect(again.code).toBe(1);
  expect(again.stderr).toMatch(/not waiting for a manual action/);
}, 120_000);
