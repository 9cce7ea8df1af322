// Declarative failovers end to end, against one long-running `drsite run` that re-reads the
// declarations every pass (GitOps): a test failover id creates <vm>-Test in plan order, the same
// id again does nothing, cleanupTest removes them; a planned failover with commit swaps roles
// with reverse replication running, and failback restores the declared direction.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { planJob, quickstart, startRun, vmStatus, waitFor, type Quickstart, type Running } from './helpers.ts';

let q: Quickstart;
let run: Running;
beforeAll(async () => {
  q = await quickstart();
  run = startRun(q);
  await waitFor('both VMs Replicating', () => {
    const st = q.readVault(vmStatus);
    return st.length === 2 && st.every((s) => s.state === 'Replicating');
  }, 60_000, run.output);
}, 90_000);
afterAll(async () => {
  await run?.stop();
  q?.cleanup();
});

const done = (id: string) =>
  waitFor(`failover ${id} to end`, () => {
    const j = q.readVault((v) => planJob(v, id));
    return j && j.state !== 'Running' && j.state !== 'Waiting' ? j : undefined;
  }, 60_000, run.output);

test('test failover in plan order; same id is a no-op; cleanupTest removes the test VMs', async () => {
  q.setFailover(['id: drill-1', 'type: test']);
  const job = await done('drill-1');
  expect(job.state, JSON.stringify(job.error)).toBe('Succeeded');
  await waitFor('test VMs recorded', () => q.readVault(vmStatus).every((s) => s.testVms.length === 1), 10_000);
  expect(q.readVault(vmStatus).map((s) => s.testVms)).toEqual([['db-01-Test'], ['web-01-Test']]);
  // Order as declared: db-01's test VM, then its group's after action, then web's before, web-01, web's after.
  expect(job.steps.map((s) => s.name)).toEqual([
    'group-1/db-01/1-test-failover',
    'group-1/after/record-database-up',
    'group-2/before/record-web-starting',
    'group-2/web-01/1-test-failover',
    'group-2/after/record-web-up',
  ]);
  for (let i = 1; i < job.steps.length; i++) expect(job.steps[i].startedAt >= job.steps[i - 1].endedAt!).toBe(true);
  expect(job.children.map((c) => [c.type, c.target, c.state])).toEqual([
    ['TestFailover', 'ProtectedVM/db-01', 'Succeeded'],
    ['TestFailover', 'ProtectedVM/web-01', 'Succeeded'],
  ]);
  const lines = q.actions();
  expect(lines.map((l) => /args=\[([^\]]*)\]/.exec(l)![1])).toEqual(['database-up', 'web-starting', 'web-up']);
  expect(lines[0]).toContain('DRSITE_FAILOVER_TYPE=test');
  expect(lines[0]).toContain('DRSITE_FAILOVER_ID=drill-1');
  expect(lines[0]).toContain('DRSITE_DIRECTION=site-a->site-b');
  expect(lines[1]).toContain('DRSITE_GROUP=web');

  // The same id again: several passes later, nothing new ran.
  const before = q.readVault((v) => v.listJobs({ limit: 500 }).length);
  q.setFailover(['id: drill-1', 'type: test', 'recoveryPoint: latest']);
  await new Promise((r) => setTimeout(r, 3000));
  expect(q.readVault((v) => v.listJobs({ limit: 500 }).length)).toBe(before);
  expect(q.actions()).toHaveLength(3);

  q.setFailover(['id: drill-2', 'type: test', 'cleanupTest: true']);
  const cleanup = await done('drill-2');
  expect(cleanup.state).toBe('Succeeded');
  await waitFor('test VMs gone', () => q.readVault(vmStatus).every((s) => s.testVms.length === 0), 10_000);
  expect(cleanup.children.map((c) => c.type)).toEqual(['CleanupTestFailover', 'CleanupTestFailover']);
}, 120_000);

test('planned failover with commit swaps roles and replicates back; failback restores the direction', async () => {
  q.setFailover(['id: move-1', 'type: planned', 'commit: true']);
  const job = await done('move-1');
  expect(job.state, JSON.stringify(job.error)).toBe('Succeeded');
  expect(job.children.map((c) => c.type)).toEqual(['PlannedFailover', 'CommitFailover', 'ReverseReplication', 'PlannedFailover', 'CommitFailover', 'ReverseReplication']);
  const planned = job.children[0];
  expect(planned.steps.map((s) => s.name)).toEqual(['power-off', 'prepare-planned-failover', 'failover']);
  await waitFor('reverse replication Replicating site-b -> site-a', () => {
    const st = q.readVault(vmStatus);
    return st.every((s) => s.state === 'Replicating' && s.direction?.primary === 'site-b' && s.direction.replica === 'site-a');
  }, 60_000, run.output);

  q.setFailover(['id: home-1', 'type: failback']);
  const back = await done('home-1');
  expect(back.state, JSON.stringify(back.error)).toBe('Succeeded');
  await waitFor('declared direction again', () => {
    const st = q.readVault(vmStatus);
    return st.every((s) => s.state === 'Replicating' && s.direction?.primary === 'site-a' && s.direction.replica === 'site-b');
  }, 60_000, run.output);
  // planned: prepare ships the final delta before the replica takes over, so the failover used the
  // point the prepare reported (zero data loss).
  const prepare = planned.steps[1].output as { sequence?: number } | undefined;
  const failover = planned.steps[2].output as { recoveryPoint?: { sequence: number } } | undefined;
  expect(failover?.recoveryPoint?.sequence).toBe(prepare?.sequence);
}, 150_000);
