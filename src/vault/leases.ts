// Leases: which process may act on the sites for this vault. One row per lease name, taken and
// checked in one write transaction so two processes that ask at once cannot both win; a holder
// renews before expiry, and a lease whose holder is gone (expired, or judged dead by the caller)
// is taken over.

import { TerminalError } from '../model/errors.ts';
import type { Connection } from './sqlite.ts';
import { iso } from './values.ts';

export interface LeaseHolder {
  readonly pid: number;
  readonly host: string;
  /** What the holder runs, for the message the others see (e.g. `drsite apply`). */
  readonly command: string;
}

export interface Lease extends LeaseHolder {
  readonly name: string;
  readonly acquiredAt: string;
  readonly expiresAt: string;
}

export type TakeResult = { readonly taken: true; readonly lease: Lease; readonly tookOverFrom?: Lease } | { readonly taken: false; readonly holder: Lease };

interface LeaseRow extends Record<string, unknown> {
  name: string;
  holder_pid: number;
  holder_host: string;
  command: string;
  acquired_at: number;
  expires_at: number;
}

const same = (r: LeaseRow, h: LeaseHolder) => r.holder_pid === h.pid && r.holder_host === h.host;

/**
 * Takes `name` for `holder` until now + ttlMs, unless another live holder has it. A row that has
 * expired is free; `isGone` lets the caller declare an unexpired holder dead (a pid that no longer
 * exists on this host) without the vault doing process I/O.
 */
export function takeLease(c: Connection, name: string, holder: LeaseHolder, now: number, ttlMs: number, isGone: (h: Lease) => boolean): TakeResult {
  if (!Number.isSafeInteger(ttlMs) || ttlMs < 1) throw new TerminalError('invalid-argument', `lease ${name}: ttl must be a positive integer of ms, got ${ttlMs}`);
  return c.transaction(() => {
    const row = c.get<LeaseRow>('SELECT * FROM leases WHERE name = ?', name);
    const prior = row && toLease(row);
    if (row && prior && !same(row, holder) && row.expires_at > now && !isGone(prior)) return { taken: false, holder: prior };
    const acquiredAt = row && same(row, holder) ? row.acquired_at : now;
    c.run(
      `INSERT INTO leases (name, holder_pid, holder_host, command, acquired_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET holder_pid = excluded.holder_pid, holder_host = excluded.holder_host,
         command = excluded.command, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at`,
      name, holder.pid, holder.host, holder.command, acquiredAt, now + ttlMs,
    );
    const lease: Lease = { name, ...holder, acquiredAt: iso(acquiredAt), expiresAt: iso(now + ttlMs) };
    return row && prior && !same(row, holder) ? { taken: true, lease, tookOverFrom: prior } : { taken: true, lease };
  });
}

/** Extends the holder's lease; false when it no longer holds it (it expired and was taken over). */
export function renewLease(c: Connection, name: string, holder: LeaseHolder, now: number, ttlMs: number): boolean {
  return c.run('UPDATE leases SET expires_at = ? WHERE name = ? AND holder_pid = ? AND holder_host = ?', now + ttlMs, name, holder.pid, holder.host).changes > 0;
}

/** True when the holder had the lease. Someone else's lease is left alone. */
export function releaseLease(c: Connection, name: string, holder: LeaseHolder): boolean {
  return c.run('DELETE FROM leases WHERE name = ? AND holder_pid = ? AND holder_host = ?', name, holder.pid, holder.host).changes > 0;
}

export function getLease(c: Connection, name: string): Lease | undefined {
  const r = c.get<LeaseRow>('SELECT * FROM leases WHERE name = ?', name);
  return r && toLease(r);
}

function toLease(r: LeaseRow): Lease {
  return { name: r.name, pid: r.holder_pid, host: r.holder_host, command: r.command, acquiredAt: iso(r.acquired_at), expiresAt: iso(r.expires_at) };
}
