import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/model/clock.ts';
import { mergeCondition, Vault } from '../../src/vault/vault.ts';
import { canonicalJson } from '../../src/vault/canonical-json.ts';
import { BACKENDS, useVaultPlaces, type Backend } from './backends.ts';

const place = useVaultPlaces();

function open(backend: Backend, clock = new ManualClock()): { v: Vault; clock: ManualClock; path: string } {
  const path = place(backend);
  return { v: Vault.open(path, { clock }), clock, path };
}

describe('canonical JSON', () => {
  const cases = [
    { reason: 'key order at top level', a: { b: 1, a: 2 }, b: { a: 2, b: 1 }, same: true },
    { reason: 'key order nested in arrays', a: { x: [{ q: 1, p: [1, 2] }] }, b: { x: [{ p: [1, 2], q: 1 }] }, same: true },
    { reason: 'undefined members are absent', a: { a: 1, b: undefined }, b: { a: 1 }, same: true },
    { reason: 'array order matters', a: { x: [1, 2] }, b: { x: [2, 1] }, same: false },
    { reason: 'types matter', a: { x: 1 }, b: { x: '1' }, same: false },
    { reason: 'integer-like keys', a: { '10': 1, '2': 2, b: 3 }, b: { b: 3, '2': 2, '10': 1 }, same: true },
  ];
  for (const c of cases) {
    it(c.reason, () => {
      expect(canonicalJson(c.a) === canonicalJson(c.b)).toBe(c.same);
    });
  }
  it('refuses values JSON cannot hold', () => {
    expect(() => canonicalJson({ a: NaN }, 'spec')).toThrow(/spec\.a is NaN/);
    expect(() => canonicalJson({ a: [1n] }, 'spec')).toThrow(/spec\.a\[0\] is a bigint/);
  });
});

describe.each(BACKENDS)('vault on %s', (backend) => {
  describe('desired generations', () => {
    it('increments the generation only when the canonical spec changes', async () => {
      const { v, clock } = open(backend);
      const spec = { vm: 'web-1', primary: 'hq', replica: 'dr', disks: { exclude: ['swap'] } };
      expect(v.recordDesired('ProtectedVM', 'web-1', spec)).toEqual({ generation: 1, changed: true });
      expect(v.recordDesired('ProtectedVM', 'web-1', structuredClone(spec))).toEqual({ generation: 1, changed: false });
      // same content, keys in another order at every level
      expect(v.recordDesired('ProtectedVM', 'web-1', { disks: { exclude: ['swap'] }, replica: 'dr', primary: 'hq', vm: 'web-1' })).toEqual({ generation: 1, changed: false });
      await clock.advance(1000);
      expect(v.recordDesired('ProtectedVM', 'web-1', { ...spec, replica: 'dr2' })).toEqual({ generation: 2, changed: true });
      expect(v.recordDesired('ProtectedVM', 'web-1', { ...spec, replica: 'dr2' })).toEqual({ generation: 2, changed: false });
      expect(v.recordDesired('ProtectedVM', 'web-1', spec)).toEqual({ generation: 3, changed: true });
      expect(v.getDesired('ProtectedVM', 'web-1')).toEqual({ kind: 'ProtectedVM', name: 'web-1', generation: 3, spec, updatedAt: new Date(clock.now()).toISOString() });
      // another resource counts on its own
      expect(v.recordDesired('ProtectedVM', 'db-1', spec)).toEqual({ generation: 1, changed: true });
      v.close();
    });

    it('lists by kind and name, and keeps counting generations across delete and re-create', () => {
      const { v } = open(backend);
      v.recordDesired('Site', 'hq', { type: 'host' });
      v.recordDesired('ProtectedVM', 'web-2', { vm: 'web-2' });
      v.recordDesired('ProtectedVM', 'web-1', { vm: 'web-1' });
      v.recordDesired('ProtectedVM', 'web-1', { vm: 'web-1', policy: 'p' });
      expect(v.listDesired().map((r) => `${r.kind}/${r.name}@${r.generation}`)).toEqual(['ProtectedVM/web-1@2', 'ProtectedVM/web-2@1', 'Site/hq@1']);
      expect(v.listDesired('Site').map((r) => r.name)).toEqual(['hq']);
      expect(v.deleteDesired('ProtectedVM', 'web-1')).toBe(true);
      expect(v.deleteDesired('ProtectedVM', 'web-1')).toBe(false);
      expect(v.getDesired('ProtectedVM', 'web-1')).toBeUndefined();
      expect(v.listDesired('ProtectedVM').map((r) => r.name)).toEqual(['web-2']);
      // re-created with the very same spec: a new generation, so an old observedGeneration can't match it
      expect(v.recordDesired('ProtectedVM', 'web-1', { vm: 'web-1', policy: 'p' })).toEqual({ generation: 3, changed: true });
      v.close();
    });

    it('refuses an empty key', () => {
      const { v } = open(backend);
      expect(() => v.recordDesired('', 'x', {})).toThrow(expect.objectContaining({ code: 'invalid-argument' }));
      v.close();
    });
  });

  describe('status and conditions', () => {
    it('stores and lists status', () => {
      const { v, clock } = open(backend);
      v.setStatus('ProtectedVM', 'web-1', { observedGeneration: 2, conditions: [], fields: { state: 'Replicating', lag: 12, role: { hq: 'Primary', dr: 'Replica' } } });
      v.setStatus('Site', 'hq', { observedGeneration: 1, conditions: [], fields: {} });
      expect(v.getStatus('ProtectedVM', 'web-1')).toEqual({
        kind: 'ProtectedVM', name: 'web-1', observedGeneration: 2, conditions: [],
        fields: { state: 'Replicating', lag: 12, role: { hq: 'Primary', dr: 'Replica' } }, updatedAt: new Date(clock.now()).toISOString(),
      });
      expect(v.listStatus().map((s) => `${s.kind}/${s.name}`)).toEqual(['ProtectedVM/web-1', 'Site/hq']);
      expect(v.listStatus('Site').map((s) => s.name)).toEqual(['hq']);
      expect(v.getStatus('Site', 'nope')).toBeUndefined();
      expect(() => v.setStatus('Site', 'hq', { observedGeneration: -1, conditions: [], fields: {} })).toThrow(/observedGeneration must be a non-negative integer/);
      expect(v.deleteStatus('Site', 'hq')).toBe(true);
      expect(v.getStatus('Site', 'hq')).toBeUndefined();
      v.close();
    });

    it('keeps lastTransitionTime while status is unchanged and moves it when status changes', async () => {
      const { v, clock } = open(backend);
      const t0 = new Date(clock.now()).toISOString();
      v.setStatus('ProtectedVM', 'web-1', { observedGeneration: 5, conditions: [], fields: { state: 'Replicating' } });
      expect(v.setCondition('ProtectedVM', 'web-1', { type: 'Ready', status: 'False', reason: 'InitialReplication', message: '10%' })).toEqual({
        type: 'Ready', status: 'False', reason: 'InitialReplication', message: '10%', lastTransitionTime: t0,
      });
      await clock.advance(60_000);
      // same status, new reason and message: they are updated, the transition time is not
      expect(v.setCondition('ProtectedVM', 'web-1', { type: 'Ready', status: 'False', reason: 'InitialReplication', message: '60%' })).toEqual({
        type: 'Ready', status: 'False', reason: 'InitialReplication', message: '60%', lastTransitionTime: t0,
      });
      await clock.advance(60_000);
      const t2 = new Date(clock.now()).toISOString();
      expect(v.setCondition('ProtectedVM', 'web-1', { type: 'Ready', status: 'True', reason: 'Replicating', message: '' }).lastTransitionTime).toBe(t2);
      // explicit time wins over the clock
      const explicit = Date.UTC(2030, 0, 1);
      expect(v.setCondition('ProtectedVM', 'web-1', { type: 'Healthy', status: 'True', reason: 'Normal', message: '' }, explicit).lastTransitionTime).toBe('2030-01-01T00:00:00.000Z');
      const st = v.getStatus('ProtectedVM', 'web-1')!;
      expect(st.conditions.map((c) => [c.type, c.status, c.lastTransitionTime])).toEqual([['Ready', 'True', t2], ['Healthy', 'True', '2030-01-01T00:00:00.000Z']]);
      // setCondition leaves the rest of the status alone
      expect(st.observedGeneration).toBe(5);
      expect(st.fields).toEqual({ state: 'Replicating' });
      // on a resource without status it starts one
      v.setCondition('Site', 'dr', { type: 'Reachable', status: 'Unknown', reason: 'NotYetProbed', message: '' });
      expect(v.getStatus('Site', 'dr')).toMatchObject({ observedGeneration: 0, fields: {}, conditions: [{ type: 'Reachable', status: 'Unknown' }] });
      expect(() => v.setCondition('Site', 'dr', { type: 'Reachable', status: 'Maybe' as 'True', reason: '', message: '' })).toThrow(/status must be True, False or Unknown/);
      v.close();
    });

    it('mergeCondition is pure and returns a new array', () => {
      const before = [{ type: 'Ready', status: 'True' as const, reason: 'A', message: '', lastTransitionTime: '2026-01-01T00:00:00.000Z' }];
      const after = mergeCondition(before, { type: 'Ready', status: 'True', reason: 'B', message: 'm' }, Date.UTC(2027, 0, 1));
      expect(after).toEqual([{ type: 'Ready', status: 'True', reason: 'B', message: 'm', lastTransitionTime: '2026-01-01T00:00:00.000Z' }]);
      expect(before[0].reason).toBe('A');
    });
  });
});
