import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/model/clock.ts';
import { Vault } from '../../src/vault/vault.ts';
import { BACKENDS, useVaultPlaces, type Backend } from './backends.ts';

const place = useVaultPlaces();

function open(backend: Backend, options: { maxEvents?: number } = {}): { v: Vault; clock: ManualClock; path: string } {
  const clock = new ManualClock();
  const path = place(backend);
  return { v: Vault.open(path, { clock, ...options }), clock, path };
}

describe.each(BACKENDS)('vault on %s', (backend) => {
  describe('events', () => {
    it('lists newest first, by object, limited; folds an immediate repeat into a count', async () => {
      const { v, clock } = open(backend);
      const t0 = new Date(clock.now()).toISOString();
      v.recordEvent({ kind: 'ProtectedVM', name: 'web-1', type: 'Normal', reason: 'ProtectionEnabled', message: 'replicating to dr' });
      v.recordEvent({ kind: 'ProtectedVM', name: 'web-1', type: 'Warning', reason: 'CycleMissed', message: 'replica unreachable' });
      v.recordEvent({ kind: 'Site', name: 'dr', type: 'Warning', reason: 'Unreachable', message: 'connect ECONNREFUSED' });
      await clock.advance(30_000);
      const t1 = new Date(clock.now()).toISOString();
      const repeat = v.recordEvent({ kind: 'ProtectedVM', name: 'web-1', type: 'Warning', reason: 'CycleMissed', message: 'replica unreachable' });
      expect(repeat).toEqual({
        id: 2, kind: 'ProtectedVM', name: 'web-1', type: 'Warning', reason: 'CycleMissed', message: 'replica unreachable',
        count: 2, firstTimestamp: t0, lastTimestamp: t1,
      });
      v.recordEvent({ kind: 'ProtectedVM', name: 'web-1', type: 'Normal', reason: 'CycleCompleted', message: 'caught up' });
      // not the newest event of that object any more: a new row
      expect(v.recordEvent({ kind: 'ProtectedVM', name: 'web-1', type: 'Warning', reason: 'CycleMissed', message: 'replica unreachable' }).count).toBe(1);

      expect(v.listEvents({ limit: 100 }).map((e) => `${e.kind}/${e.name} ${e.reason} x${e.count}`)).toEqual([
        'ProtectedVM/web-1 CycleMissed x1',
        'ProtectedVM/web-1 CycleCompleted x1',
        'Site/dr Unreachable x1',
        'ProtectedVM/web-1 CycleMissed x2',
        'ProtectedVM/web-1 ProtectionEnabled x1',
      ]);
      expect(v.listEvents({ kind: 'ProtectedVM', name: 'web-1', limit: 2 }).map((e) => e.reason)).toEqual(['CycleMissed', 'CycleCompleted']);
      expect(v.listEvents({ kind: 'Site', limit: 10 }).map((e) => e.name)).toEqual(['dr']);
      expect(v.listEvents({ name: 'nope', limit: 10 })).toEqual([]);
      expect(() => v.recordEvent({ kind: 'Site', name: 'dr', type: 'Error' as 'Warning', reason: 'X', message: '' })).toThrow(/type must be Normal or Warning/);
      expect(() => v.listEvents({ limit: 0 })).toThrow(/limit must be a positive integer/);
      v.close();
    });

    it('keeps only the newest maxEvents', () => {
      const { v } = open(backend, { maxEvents: 5 });
      for (let i = 0; i < 12; i++) v.recordEvent({ kind: 'Site', name: 'hq', type: 'Normal', reason: 'Tick', message: `n=${i}` });
      expect(v.listEvents({ limit: 100 }).map((e) => e.message)).toEqual(['n=11', 'n=10', 'n=9', 'n=8', 'n=7']);
      v.close();
    });
  });

  describe('last action', () => {
    it('remembers which declared action ran, per resource, across reopen', () => {
      const { v, path } = open(backend);
      expect(v.getLastAction('RecoveryPlan', 'tier1')).toBeUndefined();
      const job = v.createJob({ type: 'RecoveryPlan', target: 'RecoveryPlan/tier1' });
      v.recordAction('RecoveryPlan', 'tier1', { id: 'drill-1', type: 'test', jobId: job.id, state: 'Running' });
      v.recordAction('RecoveryPlan', 'tier1', { id: 'drill-1', type: 'test', jobId: job.id, state: 'Succeeded' });
      v.recordAction('RecoveryPlan', 'tier2', { id: 'x', type: 'planned', state: 'Failed' });
      v.close();
      const again = Vault.open(path);
      expect(again.getLastAction('RecoveryPlan', 'tier1')).toEqual({ id: 'drill-1', type: 'test', jobId: job.id, state: 'Succeeded', recordedAt: '2026-01-01T00:00:00.000Z' });
      expect(again.getLastAction('RecoveryPlan', 'tier2')).toEqual({ id: 'x', type: 'planned', state: 'Failed', recordedAt: '2026-01-01T00:00:00.000Z' });
      again.recordAction('RecoveryPlan', 'tier1', { id: 'drill-2', type: 'planned', state: 'Running' });
      expect(again.getLastAction('RecoveryPlan', 'tier1')).toMatchObject({ id: 'drill-2', type: 'planned' });
      expect(again.getLastAction('RecoveryPlan', 'tier1')!.jobId).toBeUndefined();
      again.close();
    });
  });

  describe('pending marks', () => {
    it('survive close and reopen, refuse a second mark on the same key, clear', async () => {
      const { v, clock, path } = open(backend);
      v.markPending('create-replica/web-1', { site: 'dr', disk: 'os.qcow2', relationship: 'r-5f2c' });
      await clock.advance(10);
      v.markPending('failover/tier1/drill-1', null);
      expect(() => v.markPending('create-replica/web-1', {})).toThrow(expect.objectContaining({ code: 'invalid-state', message: expect.stringContaining('create-replica/web-1 already exists since 2026-01-01T00:00:00.000Z') }));
      v.close();

      const again = Vault.open(path);
      expect(again.listPending()).toEqual([
        { key: 'create-replica/web-1', payload: { disk: 'os.qcow2', relationship: 'r-5f2c', site: 'dr' }, createdAt: '2026-01-01T00:00:00.000Z' },
        { key: 'failover/tier1/drill-1', payload: null, createdAt: '2026-01-01T00:00:00.010Z' },
      ]);
      expect(again.getPending('failover/tier1/drill-1')).toMatchObject({ payload: null });
      expect(again.clearPending('create-replica/web-1')).toBe(true);
      expect(again.clearPending('create-replica/web-1')).toBe(false);
      expect(again.listPending().map((m) => m.key)).toEqual(['failover/tier1/drill-1']);
      again.markPending('create-replica/web-1', { attempt: 2 });
      again.close();
    });
  });

  describe('transactions and lifecycle', () => {
    it('nests: an inner failure rolls back only the inner part', () => {
      const { v } = open(backend);
      v.transaction(() => {
        v.recordDesired('Site', 'hq', { type: 'host' });
        expect(() =>
          v.transaction(() => {
            v.recordDesired('Site', 'dr', { type: 'host' });
            v.markPending('k', 1);
            throw new Error('inner');
          }),
        ).toThrow('inner');
        v.recordEvent({ kind: 'Site', name: 'hq', type: 'Normal', reason: 'Added', message: '' });
      });
      expect(v.listDesired().map((r) => r.name)).toEqual(['hq']);
      expect(v.listPending()).toEqual([]);
      expect(v.listEvents({ limit: 5 })).toHaveLength(1);
      v.close();
    });

    it('refuses an async transaction body and rolls it back', async () => {
      const { v } = open(backend);
      expect(() =>
        v.transaction(() => {
          v.recordDesired('Site', 'hq', {});
          return Promise.resolve(1);
        }),
      ).toThrow(/must be synchronous/);
      expect(v.listDesired()).toEqual([]);
      v.close();
    });

    it('says so when used after close; close twice is harmless', () => {
      const { v } = open(backend);
      v.close();
      v.close();
      expect(() => v.listDesired()).toThrow(expect.objectContaining({ code: 'invalid-state', message: expect.stringContaining('is closed') }));
    });
  });
});
