// Measure-VMReplication statistics (record, reset, JSON) and the health rules with their reasons.
import { describe, it, expect } from 'vitest';
import { ManualClock } from '../../../src/model/clock.ts';
import { ReplicationStatistics } from '../../../src/core/replication/statistics.ts';
import { assessHealth } from '../../../src/core/replication/health.ts';
import type { HealthFacts } from '../../../src/core/replication/health.ts';

const MIN = 60_000;

describe('replication statistics', () => {
  it('records cycles, serialises, and reset restarts the window keeping the facts', async () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const stats = new ReplicationStatistics(clock);
    stats.setState('Replicating', 'Normal');
    await clock.advance(MIN);
    stats.recordSuccess({ bytes: 1000, latencyMs: 200 });
    stats.recordSuccess({ bytes: 3000, latencyMs: 400 });
    stats.recordMissed();
    stats.recordError();
    stats.setPending(4096);
    const j = stats.toJSON();
    expect(j).toMatchObject({
      state: 'Replicating',
      health: 'Normal',
      lastReplicationTime: t0 + MIN,
      pendingReplicationSize: 4096,
      averageReplicationSize: 2000,
      maximumReplicationSize: 3000,
      averageReplicationLatency: 300,
      successfulReplicationCount: 2,
      missedReplicationCount: 1,
      replicationErrors: 1,
      monitoringStartTime: t0,
    });
    const reloaded = ReplicationStatistics.fromJSON(clock, JSON.parse(JSON.stringify(j)));
    reloaded.recordSuccess({ bytes: 2000, latencyMs: 300 });
    expect(reloaded.toJSON().averageReplicationSize).toBe(2000);
    expect(reloaded.toJSON().successfulReplicationCount).toBe(3);

    await clock.advance(MIN);
    stats.reset();
    expect(stats.toJSON()).toMatchObject({
      state: 'Replicating',
      lastReplicationTime: t0 + MIN,
      pendingReplicationSize: 4096,
      averageReplicationSize: 0,
      maximumReplicationSize: 0,
      averageReplicationLatency: 0,
      successfulReplicationCount: 0,
      missedReplicationCount: 0,
      replicationErrors: 0,
      monitoringStartTime: t0 + 2 * MIN,
    });
  });
});

describe('health', () => {
  const now = Date.UTC(2026, 0, 1, 12);
  const base: HealthFacts = { state: 'Replicating', now, frequencyMs: 5 * MIN, lastReplicationTime: now - 4 * MIN, successfulCycles: 10, missedCycles: 0 };
  const cases: { reason: string; facts: Partial<HealthFacts>; health: string; codes: string[] }[] = [
    { reason: 'on schedule', facts: {}, health: 'Normal', codes: [] },
    { reason: 'one slow cycle (lag under 2x frequency) is still Normal', facts: { lastReplicationTime: now - 9 * MIN }, health: 'Normal', codes: [] },
    { reason: 'lag over 2x frequency: behind schedule', facts: { lastReplicationTime: now - 11 * MIN }, health: 'Warning', codes: ['behind-schedule'] },
    { reason: 'no cycle yet since replication started long ago', facts: { lastReplicationTime: undefined, replicatingSince: now - 30 * MIN }, health: 'Warning', codes: ['behind-schedule'] },
    { reason: '2 of 10 missed (20%) is tolerated', facts: { successfulCycles: 8, missedCycles: 2 }, health: 'Normal', codes: [] },
    { reason: '3 of 10 missed is over 20%', facts: { successfulCycles: 7, missedCycles: 3 }, health: 'Warning', codes: ['missed-cycles'] },
    { reason: 'retrying a recoverable error', facts: { retrying: { attempts: 2, lastError: 'ECONNRESET' } }, health: 'Warning', codes: ['retrying'] },
    { reason: 'pending past the resync threshold', facts: { pendingBytes: 600, diskBytes: 1000, thresholdPercent: 50 }, health: 'Warning', codes: ['threshold-exceeded'] },
    { reason: 'resync pending', facts: { state: 'ResynchronizationRequired' }, health: 'Warning', codes: ['resync-required'] },
    { reason: 'resync running', facts: { state: 'Resynchronizing' }, health: 'Warning', codes: ['resynchronizing'] },
    { reason: 'paused', facts: { state: 'Suspended' }, health: 'Warning', codes: ['suspended'] },
    { reason: 'initial copy is not late', facts: { state: 'InitialReplicationInProgress', lastReplicationTime: undefined }, health: 'Normal', codes: [] },
    { reason: 'critical state', facts: { state: 'Critical' }, health: 'Critical', codes: ['critical-state'] },
    {
      reason: 'terminal error wins over warnings, and a retry is not reported for it',
      facts: { terminalError: { code: 'authentication', message: 'bad certificate' }, lastReplicationTime: now - 60 * MIN, retrying: { attempts: 1 } },
      health: 'Critical',
      codes: ['terminal-error', 'behind-schedule'],
    },
  ];
  for (const c of cases) {
    it(`${c.health}: ${c.reason}`, () => {
      const r = assessHealth({ ...base, ...c.facts });
      expect(r.health).toBe(c.health);
      expect(r.reasons.map((x) => x.code)).toEqual(c.codes);
      for (const x of r.reasons) expect(x.message.length).toBeGreaterThan(0);
    });
  }
});
