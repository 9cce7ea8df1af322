import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/model/clock.ts';
import { Vault } from '../../src/vault/vault.ts';
import { useTempDir } from './temp-dir.ts';

const tempDir = useTempDir();
const A = { pid: 100, host: 'h1', command: 'drsite run' };
const B = { pid: 200, host: 'h1', command: 'drsite apply' };
const alive = () => false;

function open(): { v: Vault; clock: ManualClock } {
  const clock = new ManualClock();
  return { v: Vault.open(join(tempDir(), 'vault.db'), { clock }), clock };
}

describe('vault leases (SQLite: expiry by the vault clock; etcd leases are in etcd.test.ts)', () => {
  it('one holder at a time; the holder renews and releases, the other is told who holds it', async () => {
    const { v, clock } = open();
    expect(v.takeLease('reconcile', A, 30_000, alive)).toMatchObject({ taken: true, lease: { pid: 100, acquiredAt: new Date(clock.now()).toISOString() } });
    expect(v.takeLease('reconcile', B, 30_000, alive)).toEqual({ taken: false, holder: v.getLease('reconcile') });
    expect(v.getLease('reconcile')).toMatchObject({ pid: 100, host: 'h1', command: 'drsite run' });
    await clock.advance(20_000);
    expect(v.renewLease('reconcile', A, 30_000)).toBe(true);
    await clock.advance(20_000); // 40 s after taking, 20 s after renewing: still held
    expect(v.takeLease('reconcile', B, 30_000, alive).taken).toBe(false);
    expect(v.releaseLease('reconcile', B)).toBe(false); // someone else's lease is left alone
    expect(v.releaseLease('reconcile', A)).toBe(true);
    expect(v.getLease('reconcile')).toBeUndefined();
    expect(v.takeLease('reconcile', B, 30_000, alive).taken).toBe(true);
    v.close();
  });

  it('an expired lease, or one whose holder the caller finds gone, is taken over; the old holder learns it lost it', async () => {
    const { v, clock } = open();
    v.takeLease('reconcile', A, 30_000, alive);
    await clock.advance(30_001);
    const r = v.takeLease('reconcile', B, 30_000, alive);
    expect(r).toMatchObject({ taken: true, tookOverFrom: { pid: 100 } });
    expect(v.renewLease('reconcile', A, 30_000)).toBe(false);
    const gone = v.takeLease('reconcile', A, 30_000, (h) => h.pid === 200);
    expect(gone).toMatchObject({ taken: true, lease: { pid: 100 }, tookOverFrom: { pid: 200, command: 'drsite apply' } });
    // Taking again as the holder keeps the original acquisition time.
    const since = (gone as { lease: { acquiredAt: string } }).lease.acquiredAt;
    await clock.advance(1000);
    expect(v.takeLease('reconcile', A, 30_000, alive)).toMatchObject({ taken: true, lease: { acquiredAt: since } });
    v.close();
  });

  it('a vault created from nothing says so until a pass clears it, and reopening does not set it again', async () => {
    const { v } = open();
    expect(v.createdEmpty).toBe(true);
    v.clearCreatedEmpty();
    const path = v.path;
    v.close();
    const again = Vault.open(path);
    expect(again.createdEmpty).toBe(false);
    again.close();
  });
});
