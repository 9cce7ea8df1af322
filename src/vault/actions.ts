// The last declarative action run per resource (e.g. a recovery plan's failover.id), so the
// reconciler can make "same id again" a no-op and a new id run exactly once.

import type { Connection } from './sqlite.ts';
import type { JobState } from './jobs.ts';
import { TerminalError } from '../model/errors.ts';
import { checkKey, iso } from './values.ts';

export interface ActionRecord {
  /** The id the declaration gave the action (`failover.id`). */
  readonly id: string;
  /** e.g. test | planned | unplanned | failback | commit | cleanupTest. */
  readonly type: string;
  readonly jobId?: string;
  readonly state: JobState;
}

export interface LastAction extends ActionRecord {
  readonly recordedAt: string;
}

interface ActionRow extends Record<string, unknown> {
  action_id: string;
  type: string;
  job_id: string | null;
  state: JobState;
  recorded_at: number;
}

export function recordAction(c: Connection, kind: string, name: string, a: ActionRecord, now: number): void {
  checkKey(kind, name);
  if (typeof a.id !== 'string' || a.id === '') throw new TerminalError('invalid-argument', `action for ${kind}/${name}: id must be a non-empty string`);
  if (typeof a.type !== 'string' || a.type === '') throw new TerminalError('invalid-argument', `action ${a.id} for ${kind}/${name}: type must be a non-empty string`);
  c.run(
    `INSERT INTO last_actions (kind, name, action_id, type, job_id, state, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (kind, name) DO UPDATE SET action_id = excluded.action_id, type = excluded.type,
       job_id = excluded.job_id, state = excluded.state, recorded_at = excluded.recorded_at`,
    kind, name, a.id, a.type, a.jobId ?? null, a.state, now,
  );
}

export function getLastAction(c: Connection, kind: string, name: string): LastAction | undefined {
  const r = c.get<ActionRow>('SELECT * FROM last_actions WHERE kind = ? AND name = ?', kind, name);
  if (!r) return undefined;
  return {
    id: r.action_id,
    type: r.type,
    ...(r.job_id !== null && { jobId: r.job_id }),
    state: r.state,
    recordedAt: iso(r.recorded_at),
  };
}
