// Jobs: every operation (DESIGN.md section 5) is a job with ordered, timed steps; a recovery plan's
// job holds its groups' jobs as children. Steps are journalled as they start and end, so a
// restarted process can tell which step of a Running job was interrupted.

import { randomBytes } from 'node:crypto';
import { TerminalError } from '../model/errors.ts';
import { canonicalJson } from './canonical-json.ts';
import type { Connection } from './sqlite.ts';
import { iso, toStoredError, type StoredError } from './values.ts';

export const JOB_TYPES = [
  'EnableProtection',
  'InitialReplication',
  'FinalizeProtection',
  'TestFailover',
  'CleanupTestFailover',
  'PlannedFailover',
  'UnplannedFailover',
  'CommitFailover',
  'CancelFailover',
  'ReverseReplication',
  'Resynchronize',
  'ExtendReplication',
  'ChangePolicy',
  'MoveReplicaStorage',
  'DisableProtection',
  'RecoveryPlan',
] as const;
export type JobType = (typeof JOB_TYPES)[number];

export const JOB_STATES = ['Running', 'Waiting', 'Succeeded', 'Failed', 'Cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];
/** States a job ends in; Running and Waiting (for `drsite continue`) are the open ones. */
export type FinalJobState = 'Succeeded' | 'Failed' | 'Cancelled';

export const STEP_STATES = ['Running', 'Succeeded', 'Failed', 'Skipped', 'Cancelled'] as const;
export type StepState = (typeof STEP_STATES)[number];
export type FinalStepState = Exclude<StepState, 'Running'>;

export type JobError = StoredError;

export interface JobStep {
  readonly name: string;
  readonly state: StepState;
  /** 1 on the first start; a step started again (resumed after a crash, retried) counts up. */
  readonly attempt: number;
  readonly startedAt: string;
  readonly endedAt?: string;
  readonly error?: JobError;
  readonly output?: unknown;
}

export interface JobSummary {
  readonly id: string;
  readonly type: JobType;
  /** What the job acts on, e.g. `ProtectedVM/web-1` or `RecoveryPlan/tier1`. */
  readonly target: string;
  readonly parentId?: string;
  readonly state: JobState;
  readonly input?: unknown;
  readonly error?: JobError;
  readonly startedAt: string;
  readonly endedAt?: string;
}

export interface Job extends JobSummary {
  readonly steps: readonly JobStep[];
  readonly children: readonly Job[];
}

export interface NewJob {
  readonly type: JobType;
  readonly target: string;
  readonly parentId?: string;
  /** Free-form parameters (failover id, recovery point...), kept so a resumed job knows them. */
  readonly input?: unknown;
}

export interface JobQuery {
  /** @default 50 */
  readonly limit?: number;
  readonly target?: string;
  readonly state?: JobState;
  readonly type?: JobType;
  /** A job id: only its children; null: only top-level jobs; omitted: all. */
  readonly parentId?: string | null;
}

interface JobRow extends Record<string, unknown> {
  id: string;
  type: JobType;
  target: string;
  parent_id: string | null;
  state: JobState;
  input: string | null;
  error: string | null;
  created_at: number;
  ended_at: number | null;
}

interface StepRow extends Record<string, unknown> {
  name: string;
  state: StepState;
  attempt: number;
  started_at: number;
  ended_at: number | null;
  error: string | null;
  output: string | null;
}

/** `job-<UTC time to the ms>-<random>`: sorts by creation time as text, unique across processes. */
export function newJobId(now: number): string {
  const t = iso(now).replace(/[-:.]/g, '');
  return `job-${t}-${randomBytes(4).toString('hex')}`;
}

export function createJob(c: Connection, job: NewJob, now: number): Job {
  if (!(JOB_TYPES as readonly string[]).includes(job.type)) {
    throw new TerminalError('invalid-argument', `unknown job type ${JSON.stringify(job.type)}; expected one of ${JOB_TYPES.join(', ')}`);
  }
  if (typeof job.target !== 'string' || job.target === '') throw new TerminalError('invalid-argument', `job ${job.type}: target must be a non-empty string`);
  const input = job.input === undefined ? null : canonicalJson(job.input, `job ${job.type} input`);
  const id = newJobId(now);
  c.transaction(() => {
    if (job.parentId !== undefined && !c.get('SELECT 1 AS x FROM jobs WHERE id = ?', job.parentId)) {
      throw new TerminalError('not-found', `parent job ${job.parentId} of new ${job.type} job for ${job.target} does not exist`);
    }
    c.run(
      'INSERT INTO jobs (id, type, target, parent_id, state, input, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
      id, job.type, job.target, job.parentId ?? null, 'Running', input, now,
    );
  });
  return getJob(c, id)!;
}

function openJob(c: Connection, jobId: string, doing: string): JobRow {
  const row = c.get<JobRow>('SELECT * FROM jobs WHERE id = ?', jobId);
  if (!row) throw new TerminalError('not-found', `cannot ${doing}: job ${jobId} does not exist`);
  if (row.state !== 'Running' && row.state !== 'Waiting') {
    throw new TerminalError('invalid-state', `cannot ${doing}: job ${jobId} (${row.type} ${row.target}) already ended ${row.state}`);
  }
  return row;
}

/** Starts a step, or restarts one of the same name (attempt + 1, keeping its place in the order). */
export function startStep(c: Connection, jobId: string, name: string, now: number): JobStep {
  if (typeof name !== 'string' || name === '') throw new TerminalError('invalid-argument', `job ${jobId}: step name must be a non-empty string`);
  return c.transaction(() => {
    openJob(c, jobId, `start step ${JSON.stringify(name)}`);
    const existing = c.get<StepRow>('SELECT * FROM job_steps WHERE job_id = ? AND name = ?', jobId, name);
    if (existing) {
      c.run(
        `UPDATE job_steps SET state = 'Running', attempt = attempt + 1, started_at = ?, ended_at = NULL, error = NULL, output = NULL
         WHERE job_id = ? AND name = ?`,
        now, jobId, name,
      );
    } else {
      c.run(
        `INSERT INTO job_steps (job_id, position, name, state, attempt, started_at)
         VALUES (?, (SELECT coalesce(max(position), 0) + 1 FROM job_steps WHERE job_id = ?), ?, 'Running', 1, ?)`,
        jobId, jobId, name, now,
      );
    }
    return toStep(c.get<StepRow>('SELECT * FROM job_steps WHERE job_id = ? AND name = ?', jobId, name)!);
  });
}

export interface StepEnd {
  readonly state: FinalStepState;
  readonly error?: unknown;
  readonly output?: unknown;
}

export function endStep(c: Connection, jobId: string, name: string, end: StepEnd, now: number): JobStep {
  if (!STEP_STATES.includes(end.state) || (end.state as string) === 'Running') {
    throw new TerminalError('invalid-argument', `job ${jobId} step ${JSON.stringify(name)}: end state must be Succeeded, Failed, Skipped or Cancelled, got ${JSON.stringify(end.state)}`);
  }
  const output = end.output === undefined ? null : canonicalJson(end.output, `job ${jobId} step ${name} output`);
  const error = end.error === undefined ? null : JSON.stringify(toStoredError(end.error));
  return c.transaction(() => {
    openJob(c, jobId, `end step ${JSON.stringify(name)}`);
    const step = c.get<StepRow>('SELECT * FROM job_steps WHERE job_id = ? AND name = ?', jobId, name);
    if (!step) throw new TerminalError('not-found', `cannot end step ${JSON.stringify(name)} of job ${jobId}: it was never started`);
    if (step.state !== 'Running') throw new TerminalError('invalid-state', `cannot end step ${JSON.stringify(name)} of job ${jobId}: it already ended ${step.state}`);
    c.run('UPDATE job_steps SET state = ?, ended_at = ?, error = ?, output = ? WHERE job_id = ? AND name = ?', end.state, now, error, output, jobId, name);
    return toStep(c.get<StepRow>('SELECT * FROM job_steps WHERE job_id = ? AND name = ?', jobId, name)!);
  });
}

/** Moves an open job between Running and Waiting (a manual recovery-plan action). */
export function setJobState(c: Connection, jobId: string, state: 'Running' | 'Waiting'): void {
  if (state !== 'Running' && state !== 'Waiting') throw new TerminalError('invalid-argument', `job ${jobId}: setJobState takes Running or Waiting, got ${JSON.stringify(state)}; use finishJob to end it`);
  c.transaction(() => {
    openJob(c, jobId, `set state ${state}`);
    c.run('UPDATE jobs SET state = ? WHERE id = ?', state, jobId);
  });
}

/**
 * Ends a job. Steps still Running are closed as Cancelled (the job stopped around them); a job
 * cannot Succeed with a step still running, which would be a bookkeeping bug in the caller.
 */
export function finishJob(c: Connection, jobId: string, state: FinalJobState, error: unknown, now: number): Job {
  if (state !== 'Succeeded' && state !== 'Failed' && state !== 'Cancelled') {
    throw new TerminalError('invalid-argument', `job ${jobId}: finish state must be Succeeded, Failed or Cancelled, got ${JSON.stringify(state)}`);
  }
  const stored = error === undefined ? null : JSON.stringify(toStoredError(error));
  c.transaction(() => {
    openJob(c, jobId, `finish it as ${state}`);
    const running = c.all<{ name: string }>("SELECT name FROM job_steps WHERE job_id = ? AND state = 'Running' ORDER BY position", jobId);
    if (state === 'Succeeded' && running.length) {
      throw new TerminalError('invalid-state', `job ${jobId} cannot succeed while step(s) ${running.map((r) => r.name).join(', ')} are still running`);
    }
    c.run("UPDATE job_steps SET state = 'Cancelled', ended_at = ? WHERE job_id = ? AND state = 'Running'", now, jobId);
    c.run('UPDATE jobs SET state = ?, error = ?, ended_at = ? WHERE id = ?', state, stored, now, jobId);
  });
  return getJob(c, jobId)!;
}

/** The job with its steps in order and its child jobs (recursively), oldest child first. */
export function getJob(c: Connection, id: string): Job | undefined {
  return c.read(() => {
    const row = c.get<JobRow>('SELECT * FROM jobs WHERE id = ?', id);
    return row && withDetails(c, row, 0);
  });
}

const MAX_DEPTH = 16; // plan -> group -> VM is 3; the bound only guards against a corrupt cycle

function withDetails(c: Connection, row: JobRow, depth: number): Job {
  const steps = c.all<StepRow>('SELECT * FROM job_steps WHERE job_id = ? ORDER BY position', row.id).map(toStep);
  const children =
    depth >= MAX_DEPTH ? [] : c.all<JobRow>('SELECT * FROM jobs WHERE parent_id = ? ORDER BY seq', row.id).map((r) => withDetails(c, r, depth + 1));
  return { ...toSummary(row), steps, children };
}

/** Newest first. */
export function listJobs(c: Connection, q: JobQuery = {}): JobSummary[] {
  const where: string[] = [];
  const params: (string | number)[] = [];
  if (q.target !== undefined) (where.push('target = ?'), params.push(q.target));
  if (q.state !== undefined) (where.push('state = ?'), params.push(q.state));
  if (q.type !== undefined) (where.push('type = ?'), params.push(q.type));
  if (q.parentId === null) where.push('parent_id IS NULL');
  else if (q.parentId !== undefined) (where.push('parent_id = ?'), params.push(q.parentId));
  const limit = q.limit ?? 50;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new TerminalError('invalid-argument', `listJobs: limit must be a positive integer, got ${limit}`);
  const sql = `SELECT * FROM jobs ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY seq DESC LIMIT ?`;
  return c.all<JobRow>(sql, ...params, limit).map(toSummary);
}

function toSummary(r: JobRow): JobSummary {
  return {
    id: r.id,
    type: r.type,
    target: r.target,
    ...(r.parent_id !== null && { parentId: r.parent_id }),
    state: r.state,
    ...(r.input !== null && { input: JSON.parse(r.input) }),
    ...(r.error !== null && { error: JSON.parse(r.error) as JobError }),
    startedAt: iso(r.created_at),
    ...(r.ended_at !== null && { endedAt: iso(r.ended_at) }),
  };
}

function toStep(r: StepRow): JobStep {
  return {
    name: r.name,
    state: r.state,
    attempt: r.attempt,
    startedAt: iso(r.started_at),
    ...(r.ended_at !== null && { endedAt: iso(r.ended_at) }),
    ...(r.error !== null && { error: JSON.parse(r.error) as JobError }),
    ...(r.output !== null && { output: JSON.parse(r.output) }),
  };
}
