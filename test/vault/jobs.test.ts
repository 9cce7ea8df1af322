import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/model/clock.ts';
import { RetryableError, TerminalError } from '../../src/model/errors.ts';
import { JOB_TYPES, Vault } from '../../src/vault/vault.ts';
import { BACKENDS, useVaultPlaces, type Backend } from './backends.ts';

const place = useVaultPlaces();

function open(backend: Backend = 'sqlite'): { v: Vault; clock: ManualClock; path: string } {
  const clock = new ManualClock();
  const path = place(backend);
  return { v: Vault.open(path, { clock }), clock, path };
}

const at = (clock: ManualClock) => new Date(clock.now()).toISOString();

describe.each(BACKENDS)('vault on %s', (backend) => {
  describe('jobs', () => {
    it('exports the job types of DESIGN.md section 5', () => {
      expect(JOB_TYPES).toEqual([
        'EnableProtection', 'InitialReplication', 'FinalizeProtection', 'TestFailover', 'CleanupTestFailover', 'PlannedFailover',
        'UnplannedFailover', 'CommitFailover', 'CancelFailover', 'ReverseReplication', 'Resynchronize', 'ExtendReplication',
        'ChangePolicy', 'MoveReplicaStorage', 'DisableProtection', 'RecoveryPlan',
      ]);
    });

    it('records steps with times, output and errors', async () => {
      const { v, clock, path } = open(backend);
      const t0 = at(clock);
      const job = v.createJob({ type: 'PlannedFailover', target: 'ProtectedVM/web-1', input: { failoverId: 'f-1', recoveryPoint: 'latest' } });
      expect(job).toEqual({ id: job.id, type: 'PlannedFailover', target: 'ProtectedVM/web-1', state: 'Running', input: { failoverId: 'f-1', recoveryPoint: 'latest' }, startedAt: t0, steps: [], children: [] });
      expect(job.id).toMatch(/^job-20260101T000000000Z-[0-9a-f]{8}$/);

      expect(v.startStep(job.id, 'shutdown-primary')).toEqual({ name: 'shutdown-primary', state: 'Running', attempt: 1, startedAt: t0 });
      await clock.advance(5000);
      const t1 = at(clock);
      expect(v.endStep(job.id, 'shutdown-primary', { state: 'Succeeded', output: { bytes: 4096 } })).toEqual({
        name: 'shutdown-primary', state: 'Succeeded', attempt: 1, startedAt: t0, endedAt: t1, output: { bytes: 4096 },
      });
      v.startStep(job.id, 'ship-final-delta');
      await clock.advance(1000);
      const boom = Object.assign(new Error('replica host unreachable'), { code: 'network' });
      v.endStep(job.id, 'ship-final-delta', { state: 'Failed', error: boom });
      // a retried step keeps its place and counts the attempt
      await clock.advance(1000);
      const t3 = at(clock);
      expect(v.startStep(job.id, 'ship-final-delta')).toEqual({ name: 'ship-final-delta', state: 'Running', attempt: 2, startedAt: t3 });
      v.endStep(job.id, 'ship-final-delta', { state: 'Succeeded' });
      v.startStep(job.id, 'start-replica');
      v.endStep(job.id, 'start-replica', { state: 'Skipped' });
      const done = v.finishJob(job.id, 'Succeeded');
      expect(done.state).toBe('Succeeded');
      expect(done.endedAt).toBe(t3);
      expect(done.steps.map((s) => [s.name, s.state, s.attempt])).toEqual([
        ['shutdown-primary', 'Succeeded', 1], ['ship-final-delta', 'Succeeded', 2], ['start-replica', 'Skipped', 1],
      ]);
      v.close();
      // and it is all on disk
      const again = Vault.open(path);
      expect(again.getJob(job.id)).toEqual(done);
      again.close();
    });

    it('keeps a failed step error and the job error with its code and the one retry decision', () => {
      const { v } = open(backend);
      const job = v.createJob({ type: 'Resynchronize', target: 'ProtectedVM/db' });
      v.startStep(job.id, 'compare');
      v.endStep(job.id, 'compare', { state: 'Failed', error: 'checksum mismatch at block 7' });
      const failed = v.finishJob(job.id, 'Failed', new RetryableError('low-disk', 'replica volume full'));
      expect(failed.error).toEqual({ message: 'replica volume full', code: 'low-disk', recoverable: true });
      expect(failed.steps[0].error).toEqual({ message: 'checksum mismatch at block 7', recoverable: false });
      const terminal = v.createJob({ type: 'Resynchronize', target: 'ProtectedVM/db' });
      expect(v.finishJob(terminal.id, 'Failed', new TerminalError('authorization', 'not an allowed primary')).error).toEqual({ message: 'not an allowed primary', code: 'authorization', recoverable: false });
      v.close();
    });

    it('closes steps still running when a job fails or is cancelled, and refuses to succeed around them', () => {
      const { v } = open(backend);
      const a = v.createJob({ type: 'TestFailover', target: 'RecoveryPlan/p' });
      v.startStep(a.id, 'boot-test-vm');
      expect(() => v.finishJob(a.id, 'Succeeded')).toThrow(expect.objectContaining({ code: 'invalid-state', message: expect.stringContaining('boot-test-vm') }));
      expect(v.getJob(a.id)!.state).toBe('Running');
      const cancelled = v.finishJob(a.id, 'Cancelled', 'operator cancelled');
      expect(cancelled.steps[0]).toMatchObject({ name: 'boot-test-vm', state: 'Cancelled' });
      expect(cancelled.steps[0].endedAt).toBeDefined();
      // a finished job accepts nothing more
      expect(() => v.startStep(a.id, 'more')).toThrow(expect.objectContaining({ code: 'invalid-state' }));
      expect(() => v.finishJob(a.id, 'Failed')).toThrow(expect.objectContaining({ code: 'invalid-state' }));
      expect(() => v.endStep(a.id, 'boot-test-vm', { state: 'Succeeded' })).toThrow(expect.objectContaining({ code: 'invalid-state' }));
      v.close();
    });

    it('refuses unknown types, parents, jobs and steps', () => {
      const { v } = open(backend);
      expect(() => v.createJob({ type: 'Reboot' as 'RecoveryPlan', target: 'x' })).toThrow(/unknown job type "Reboot"/);
      expect(() => v.createJob({ type: 'RecoveryPlan', target: 'x', parentId: 'job-nope' })).toThrow(expect.objectContaining({ code: 'not-found' }));
      expect(() => v.startStep('job-nope', 's')).toThrow(expect.objectContaining({ code: 'not-found' }));
      const j = v.createJob({ type: 'RecoveryPlan', target: 'x' });
      expect(() => v.endStep(j.id, 'never-started', { state: 'Succeeded' })).toThrow(expect.objectContaining({ code: 'not-found' }));
      v.startStep(j.id, 's');
      v.endStep(j.id, 's', { state: 'Succeeded' });
      expect(() => v.endStep(j.id, 's', { state: 'Failed' })).toThrow(/already ended Succeeded/);
      expect(v.getJob('job-nope')).toBeUndefined();
      expect(v.listJobs({ target: 'x' })).toHaveLength(1); // the failed creates left nothing behind
      v.close();
    });

    it('holds child jobs under a recovery plan job and waits for a manual action', async () => {
      const { v, clock } = open(backend);
      const plan = v.createJob({ type: 'RecoveryPlan', target: 'RecoveryPlan/tier1', input: { failoverId: 'dr-2026-01' } });
      const g1 = v.createJob({ type: 'PlannedFailover', target: 'ProtectedVM/db-1', parentId: plan.id });
      await clock.advance(1);
      const g2 = v.createJob({ type: 'PlannedFailover', target: 'ProtectedVM/web-1', parentId: plan.id });
      const vmStep = v.createJob({ type: 'CommitFailover', target: 'ProtectedVM/web-1', parentId: g2.id });
      v.startStep(plan.id, 'group-1');
      v.finishJob(g1.id, 'Succeeded');
      v.endStep(plan.id, 'group-1', { state: 'Succeeded' });
      v.startStep(plan.id, 'manual: check the database');
      v.setJobState(plan.id, 'Waiting');
      expect(v.listJobs({ state: 'Waiting' }).map((j) => j.id)).toEqual([plan.id]);
      v.setJobState(plan.id, 'Running');

      const got = v.getJob(plan.id)!;
      expect(got.children.map((c) => [c.id, c.state])).toEqual([[g1.id, 'Succeeded'], [g2.id, 'Running']]);
      expect(got.children[1].children.map((c) => c.id)).toEqual([vmStep.id]);
      expect(got.children[0].parentId).toBe(plan.id);
      expect(v.listJobs({ parentId: null }).map((j) => j.id)).toEqual([plan.id]);
      expect(v.listJobs({ parentId: plan.id }).map((j) => j.id)).toEqual([g2.id, g1.id]);
      expect(() => v.setJobState(plan.id, 'Succeeded' as 'Running')).toThrow(/use finishJob/);
      v.close();
    });

    it('lists newest first, filtered, limited', async () => {
      const { v, clock } = open(backend);
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        // two jobs in the same millisecond still come out in creation order
        if (i % 2 === 0) await clock.advance(1000);
        ids.push(v.createJob({ type: i % 3 === 0 ? 'Resynchronize' : 'EnableProtection', target: `ProtectedVM/vm-${i % 2}` }).id);
      }
      v.finishJob(ids[1], 'Failed', 'x');
      expect(v.listJobs().map((j) => j.id)).toEqual([...ids].reverse());
      expect(v.listJobs({ limit: 2 }).map((j) => j.id)).toEqual([ids[5], ids[4]]);
      expect(v.listJobs({ target: 'ProtectedVM/vm-1' }).map((j) => j.id)).toEqual([ids[5], ids[3], ids[1]]);
      expect(v.listJobs({ state: 'Failed' }).map((j) => j.id)).toEqual([ids[1]]);
      expect(v.listJobs({ type: 'Resynchronize' }).map((j) => j.id)).toEqual([ids[3], ids[0]]);
      expect(v.listJobs({ type: 'EnableProtection', target: 'ProtectedVM/vm-0', state: 'Running' }).map((j) => j.id)).toEqual([ids[4], ids[2]]);
      // the time part of ids sorts like creation time (the random suffix only separates same-ms ids)
      expect(ids.map((id) => id.slice(0, 23))).toEqual(ids.map((id) => id.slice(0, 23)).slice().sort());
      v.close();
    });

    it('a transaction that throws leaves no job behind', () => {
      const { v, path } = open(backend);
      expect(() =>
        v.transaction(() => {
          const j = v.createJob({ type: 'EnableProtection', target: 'ProtectedVM/a' });
          v.startStep(j.id, 's');
          throw new Error('changed my mind');
        }),
      ).toThrow('changed my mind');
      expect(v.listJobs()).toEqual([]);
      // nor does another process see anything of it
      const other = Vault.open(path);
      expect(other.listJobs()).toEqual([]);
      other.close();
      v.close();
    });
  });
});

it('sqlite: a vault another process is writing is busy, a retryable error; readers see the last commit', () => {
  const { v, path } = open('sqlite');
  const other = Vault.open(path, { busyTimeoutMs: 20 });
  v.transaction(() => {
    v.createJob({ type: 'EnableProtection', target: 'ProtectedVM/a' });
    let err: unknown;
    try {
      other.createJob({ type: 'EnableProtection', target: 'ProtectedVM/b' });
    } catch (e) {
      err = e;
    }
    expect(RetryableError.is(err)).toBe(true);
    expect((err as RetryableError).code).toBe('busy');
    // readers are not blocked by the open write transaction and see the last commit
    expect(other.listJobs()).toEqual([]);
  });
  expect(other.listJobs().map((j) => j.target)).toEqual(['ProtectedVM/a']);
  other.close();
  v.close();
});
