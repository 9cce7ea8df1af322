// While `drsite run` holds the reconcile lease, `drsite apply` and the verbs are refused at once,
// and the refusal says who holds it (the run's pid) and that the running loop applies the
// declarations itself; an edit to the files it runs is what takes effect.
import { hostname } from 'node:os';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { RECONCILE_LEASE } from '../../src/reconciler/reconcile-lease.ts';
import { planJob, quickstart, startRun, vmStatus, waitFor, type Quickstart, type Running } from './helpers.ts';

let q: Quickstart;
let run: Running;
beforeAll(async () => {
  q = await quickstart();
  run = startRun(q);
  await waitFor('both VMs Replicating', () => q.readVault(vmStatus).filter((s) => s.state === 'Replicating').length === 2, 60_000, run.output);
}, 90_000);
afterAll(async () => {
  await run?.stop();
  q?.cleanup();
});

test('apply and a verb are refused naming the running loop\'s pid; the loop applies the edited declaration', async () => {
  const pid = run.child.pid!;
  q.readVault((v) => expect(v.getLease(RECONCILE_LEASE)).toMatchObject({ pid, command: 'drsite run --poll 500ms' }));

  const apply = await q.cli(['apply', 'qs']);
  expect(apply.code, apply.stdout + apply.stderr).toBe(1);
  expect(apply.stderr).toContain(`drsite run (pid ${pid}, host ${hostname()}) holds the reconcile lease for ${q.vault}`);
  expect(apply.stderr).toMatch(/the running loop will apply this declaration on its next pass \(within \d+s, after any pass in progress\)/);
  expect(apply.stderr).toContain('--wait-lock <duration>');
  expect(apply.stdout).not.toMatch(/Plan:/); // refused before it planned anything

  const verb = await q.cli(['test-failover', 'web-01', 'qs']);
  expect(verb.code, verb.stdout + verb.stderr).toBe(1);
  expect(verb.stderr).toContain(`drsite run (pid ${pid}, host ${hostname()}) holds the reconcile lease`);
  expect(verb.stderr).toContain('the running loop acts only on declarations');

  // What the refusal says: the loop picks the edit up by itself.
  q.setFailover(['id: drill-1', 'type: test']);
  const job = await waitFor('the loop to run drill-1', () => {
    const j = q.readVault((v) => planJob(v, 'drill-1'));
    return j && j.state !== 'Running' && j.state !== 'Waiting' ? j : undefined;
  }, 60_000, run.output);
  expect(job.state, JSON.stringify(job.error)).toBe('Succeeded');
}, 90_000);
