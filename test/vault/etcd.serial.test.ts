// What only the etcd vault has to prove (the rest runs on both backends in jobs, records and
// resources): a real etcd, several vault handles as several controllers would hold them.
// Transactions are serializable across handles (a loser re-runs on the winner's state), the
// reconcile lease is an etcd lease (one holder; free only when it lapses), a holder that lost
// its lease cannot record anything (fenced), and bad addresses or a dead cluster give one
// clear error.
import { describe, expect, it } from 'vitest';
import { TerminalError } from '../../src/model/errors.ts';
import { parseEtcdUrl } from '../../src/vault/etcd.ts';
import { Vault } from '../../src/vault/vault.ts';
import { useEtcdVaults } from './backends.ts';

const fresh = useEtcdVaults();
const A = { pid: 100, host: 'site-a', command: 'drsite run' };
const B = { pid: 200, host: 'site-b', command: 'drsite run' };
const never = () => false;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('etcd vault', () => {
  it('two handles see each other at once; the vault survives both closing', () => {
    const url = fresh();
    const a = Vault.open(url);
    const b = Vault.open(url);
    expect(a.createdEmpty).toBe(true);
    a.recordDesired('ProtectedVM', 'web-1', { vm: 'web-1' });
    const job = b.createJob({ type: 'EnableProtection', target: 'ProtectedVM/web-1' });
    b.startStep(job.id, 'create-replica');
    expect(a.getDesired('ProtectedVM', 'web-1')?.generation).toBe(1);
    expect(a.getJob(job.id)?.steps.map((s) => [s.name, s.state])).toEqual([['create-replica', 'Running']]);
    a.endStep(job.id, 'create-replica', { state: 'Succeeded' });
    a.deleteDesired('ProtectedVM', 'web-1');
    expect(b.getJob(job.id)?.steps[0].state).toBe('Succeeded');
    expect(b.listDesired()).toEqual([]);
    a.close();
    b.close();
    const again = Vault.open(url);
    expect(again.getJob(job.id)?.steps[0].state).toBe('Succeeded');
    // created empty once, by the first open: reopening is not a new vault
    expect(again.createdEmpty).toBe(true);
    again.clearCreatedEmpty();
    again.close();
    const third = Vault.open(url);
    expect(third.createdEmpty).toBe(false);
    third.close();
  });

  it('a transaction that lost the race runs again on the winner state: no lost update, a pending mark taken once', () => {
    const url = fresh();
    const a = Vault.open(url);
    const b = Vault.open(url);
    a.recordDesired('Counter', 'n', { n: 0 });
    let runs = 0;
    a.transaction(() => {
      runs++;
      const n = (a.getDesired('Counter', 'n')!.spec as { n: number }).n;
      // Another controller commits in between the read and the commit, once.
      if (runs === 1) b.recordDesired('Counter', 'n', { n: n + 100 });
      a.recordDesired('Counter', 'n', { n: n + 1 });
    });
    expect(runs).toBe(2);
    expect(b.getDesired('Counter', 'n')!.spec).toEqual({ n: 101 });

    // The same race on a pending mark: the second one to commit is refused, not both taken.
    let err: unknown;
    try {
      a.transaction(() => {
        if (!b.getPending('step-1')) b.markPending('step-1', { by: 'b' });
        a.markPending('step-1', { by: 'a' });
      });
    } catch (e) {
      err = e;
    }
    expect(TerminalError.is(err) && err.code).toBe('invalid-state');
    expect(a.getPending('step-1')?.payload).toEqual({ by: 'b' });
    a.close();
    b.close();
  });

  it('the reconcile lease: one holder, another takes it only when it lapses, and the old holder is fenced', async () => {
    const url = fresh();
    const a = Vault.open(url);
    const b = Vault.open(url);
    expect(a.takeLease('reconcile', A, 2000, never)).toMatchObject({ taken: true, lease: { pid: 100, host: 'site-a' } });
    // isGone is not asked: a pid means nothing to a controller on another host
    expect(b.takeLease('reconcile', B, 2000, () => true)).toMatchObject({ taken: false, holder: { pid: 100, host: 'site-a' } });
    expect(b.getLease('reconcile')).toMatchObject({ pid: 100, command: 'drsite run' });
    for (let i = 0; i < 3; i++) {
      await sleep(1000);
      expect(a.renewLease('reconcile', A, 2000)).toBe(true);
      expect(b.takeLease('reconcile', B, 2000, never).taken).toBe(false);
    }
    a.recordDesired('Site', 'a', { written: 'while leading' });
    // a stops renewing (stalled): its etcd lease lapses and b takes over
    let took: ReturnType<Vault['takeLease']> | undefined;
    for (let i = 0; i < 40 && !took?.taken; i++) {
      await sleep(250);
      took = b.takeLease('reconcile', B, 2000, never);
    }
    expect(took).toMatchObject({ taken: true, lease: { pid: 200 }, tookOverFrom: { pid: 100, host: 'site-a' } });
    expect(() => a.recordDesired('Site', 'a', { written: 'after losing the lead' })).toThrow(/no longer holds the reconcile lease/);
    expect(b.getDesired('Site', 'a')?.spec).toEqual({ written: 'while leading' });
    expect(a.renewLease('reconcile', A, 2000)).toBe(false);
    // released cleanly: the next holder took over from nobody
    expect(b.releaseLease('reconcile', B)).toBe(true);
    expect(a.takeLease('reconcile', A, 2000, never)).toEqual({ taken: true, lease: expect.objectContaining({ pid: 100 }) });
    a.close();
    b.close();
  }, 30_000);

  it('a transaction larger than etcd accepts is refused whole, naming the flag that raises the limit', () => {
    const v = Vault.open(fresh());
    // etcd's default --max-txn-ops is 128: 200 rows cannot go in one etcd transaction
    expect(() =>
      v.transaction(() => {
        for (let i = 0; i < 200; i++) v.recordDesired('ProtectedVM', `vm-${i}`, { i });
      }),
    ).toThrow(/one transaction changes 200 rows.*--max-txn-ops/);
    expect(v.listDesired()).toEqual([]);
    v.close();
  });

  it('names what is wrong in an address, and a cluster that does not answer is a retryable error', () => {
    expect(() => parseEtcdUrl('etcd://')).toThrow(/expected etcd:\/\/host:port/);
    expect(() => parseEtcdUrl('etcd://127.0.0.1:2379,nohost')).toThrow(/"nohost" is not host:port/);
    expect(parseEtcdUrl('etcd://127.0.0.1:1,127.0.0.1:2/dr/prod/')).toEqual({ endpoints: ['http://127.0.0.1:1', 'http://127.0.0.1:2'], prefix: '/dr/prod/' });
    // a port where nothing listens
    expect(() => Vault.open('etcd://127.0.0.1:9/x')).toThrow(expect.objectContaining({ name: 'RetryableError', code: 'network', message: expect.stringContaining('etcd://127.0.0.1:9/x') }));
  }, 40_000);
});
