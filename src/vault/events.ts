// Events: what happened to a resource, for `drsite describe` and Kubernetes Events. A repeat of
// the newest event of the same object folds into it (count + 1) instead of adding a row, so a
// polling loop that re-reports the same problem does not grow the table; old rows are pruned.

import { TerminalError } from '../model/errors.ts';
import type { Connection } from './sqlite.ts';
import { checkKey, iso } from './values.ts';

export type EventType = 'Normal' | 'Warning';

export interface NewEvent {
  readonly kind: string;
  readonly name: string;
  readonly type: EventType;
  /** A short UpperCamelCase cause, e.g. `ReplicationPaused`. */
  readonly reason: string;
  readonly message: string;
}

export interface VaultEvent extends NewEvent {
  readonly id: number;
  /** How many times this event was recorded in a row. */
  readonly count: number;
  readonly firstTimestamp: string;
  readonly lastTimestamp: string;
}

export interface EventQuery {
  readonly kind?: string;
  readonly name?: string;
  readonly limit: number;
}

interface EventRow extends Record<string, unknown> {
  id: number;
  kind: string;
  name: string;
  type: EventType;
  reason: string;
  message: string;
  count: number;
  first_at: number;
  last_at: number;
}

export function recordEvent(c: Connection, e: NewEvent, now: number, keep: number): VaultEvent {
  checkKey(e.kind, e.name);
  if (e.type !== 'Normal' && e.type !== 'Warning') throw new TerminalError('invalid-argument', `event for ${e.kind}/${e.name}: type must be Normal or Warning, got ${JSON.stringify(e.type)}`);
  if (typeof e.reason !== 'string' || e.reason === '') throw new TerminalError('invalid-argument', `event for ${e.kind}/${e.name}: reason must be a non-empty string`);
  if (typeof e.message !== 'string') throw new TerminalError('invalid-argument', `event for ${e.kind}/${e.name}: message must be a string`);
  return c.transaction(() => {
    const last = c.get<EventRow>('SELECT * FROM events WHERE kind = ? AND name = ? ORDER BY id DESC LIMIT 1', e.kind, e.name);
    let id: number;
    if (last && last.type === e.type && last.reason === e.reason && last.message === e.message) {
      c.run('UPDATE events SET count = count + 1, last_at = ? WHERE id = ?', now, last.id);
      id = last.id;
    } else {
      id = c.run('INSERT INTO events (kind, name, type, reason, message, count, first_at, last_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?)', e.kind, e.name, e.type, e.reason, e.message, now, now).lastInsertRowid;
      // ids are AUTOINCREMENT (never reused), so "older than the newest `keep`" is a range on the key.
      c.run('DELETE FROM events WHERE id <= ?', id - keep);
    }
    return toEvent(c.get<EventRow>('SELECT * FROM events WHERE id = ?', id)!);
  });
}

/** Newest first. */
export function listEvents(c: Connection, q: EventQuery): VaultEvent[] {
  if (!Number.isSafeInteger(q.limit) || q.limit < 1) throw new TerminalError('invalid-argument', `listEvents: limit must be a positive integer, got ${q.limit}`);
  const where: string[] = [];
  const params: string[] = [];
  if (q.kind !== undefined) (where.push('kind = ?'), params.push(q.kind));
  if (q.name !== undefined) (where.push('name = ?'), params.push(q.name));
  const sql = `SELECT * FROM events ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY id DESC LIMIT ?`;
  return c.all<EventRow>(sql, ...params, q.limit).map(toEvent);
}

function toEvent(r: EventRow): VaultEvent {
  return {
    id: r.id,
    kind: r.kind,
    name: r.name,
    type: r.type,
    reason: r.reason,
    message: r.message,
    count: r.count,
    firstTimestamp: iso(r.first_at),
    lastTimestamp: iso(r.last_at),
  };
}
