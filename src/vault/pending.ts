// Pending marks (Crossplane's "create pending"): written and made durable before a call to the
// outside world whose result could be lost, cleared once the result is known. A mark found after a
// restart means "this may be half-done": observe before acting again, never guess.

import { TerminalError } from '../model/errors.ts';
import { canonicalJson } from './canonical-json.ts';
import type { Connection } from './sqlite.ts';
import { iso } from './values.ts';

export interface PendingMark {
  readonly key: string;
  readonly payload: unknown;
  readonly createdAt: string;
}

interface PendingRow extends Record<string, unknown> {
  key: string;
  payload: string;
  created_at: number;
}

/**
 * Refuses to overwrite an existing mark: its outcome is still unknown, and replacing it would
 * forget exactly what the mark exists to remember. Resolve it, clearPending, then mark again.
 */
export function markPending(c: Connection, key: string, payload: unknown, now: number): PendingMark {
  if (typeof key !== 'string' || key === '') throw new TerminalError('invalid-argument', 'pending mark key must be a non-empty string');
  const text = canonicalJson(payload ?? null, `pending mark ${key} payload`);
  return c.transaction(() => {
    const existing = c.get<PendingRow>('SELECT * FROM pending_marks WHERE key = ?', key);
    if (existing) {
      throw new TerminalError('invalid-state', `pending mark ${key} already exists since ${iso(existing.created_at)}: the earlier attempt's outcome is unknown; resolve it and clear the mark first`);
    }
    c.run('INSERT INTO pending_marks (key, payload, created_at) VALUES (?, ?, ?)', key, text, now);
    return { key, payload: JSON.parse(text), createdAt: iso(now) };
  });
}

/** True when a mark was removed. */
export function clearPending(c: Connection, key: string): boolean {
  return c.run('DELETE FROM pending_marks WHERE key = ?', key).changes > 0;
}

export function getPending(c: Connection, key: string): PendingMark | undefined {
  const r = c.get<PendingRow>('SELECT * FROM pending_marks WHERE key = ?', key);
  return r && toMark(r);
}

/** Oldest first: the order the interrupted calls were made in. */
export function listPending(c: Connection): PendingMark[] {
  return c.all<PendingRow>('SELECT * FROM pending_marks ORDER BY created_at, rowid').map(toMark);
}

function toMark(r: PendingRow): PendingMark {
  return { key: r.key, payload: JSON.parse(r.payload), createdAt: iso(r.created_at) };
}
