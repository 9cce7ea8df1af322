// A VM that runs but does not boot makes its relationship Warning with reason guest-not-booting;
// a booting or booted one adds nothing, and a worse health already there stays.
import { describe, expect, it } from 'vitest';
import { guestHealthReason, withHealthReasons } from '../../../src/core/replication/health.ts';
import type { GuestLiveness } from '../../../src/model/hypervisor.ts';
import type { RelationshipView } from '../../../src/model/replication-api.ts';

const view = (health: RelationshipView['health'], healthReasons: string[] = []): RelationshipView => ({
  id: 'r1', role: 'Primary', vm: 'web', peer: 'b', state: 'Replicating', health, healthReasons, disks: [], excludeDisks: [], pendingBytes: 0, recoveryPoints: 0, appliedSequence: 0,
  statistics: { state: 'Replicating', health, pendingReplicationSize: 0, averageReplicationSize: 0, maximumReplicationSize: 0, averageReplicationLatency: 0, successfulReplicationCount: 0, missedReplicationCount: 0, replicationErrors: 0, monitoringStartTime: '2026-01-01T00:00:00.000Z' },
});
const stuck: GuestLiveness = { state: 'not-booting', since: 0, evidence: 'no serial console output and no guest agent reply within 45 s since QEMU started it (accel kvm)' };

describe('guest liveness in health', () => {
  const cases: { reason: string; guest: GuestLiveness | undefined; want: string | undefined }[] = [
    { reason: 'no guest (not running, or a files VM)', guest: undefined, want: undefined },
    { reason: 'still within its boot timeout', guest: { state: 'booting', since: 0, evidence: 'no serial console output or guest agent reply yet, 3 s since QEMU started it' }, want: undefined },
    { reason: 'booted', guest: { state: 'alive', since: 0, evidence: 'serial console output' }, want: undefined },
    { reason: 'past its boot timeout with no sign', guest: stuck, want: 'guest-not-booting: VM "web" runs but shows no boot progress: no serial console output and no guest agent reply within 45 s since QEMU started it (accel kvm)' },
  ];
  for (const c of cases) {
    it(c.reason, () => expect(guestHealthReason('web', c.guest)?.message).toBe(c.want));
  }

  it('raises Normal to Warning with the reason appended, and keeps Critical', () => {
    const r = guestHealthReason('web', stuck)!;
    expect(r).toMatchObject({ code: 'guest-not-booting', severity: 'Warning' });
    const warned = withHealthReasons(view('Normal'), [r]);
    expect(warned.health).toBe('Warning');
    expect(warned.statistics.health).toBe('Warning');
    expect(warned.healthReasons).toEqual([r.message]);
    const critical = withHealthReasons(view('Critical', ['disk full']), [r]);
    expect(critical.health).toBe('Critical');
    expect(critical.healthReasons).toEqual(['disk full', r.message]);
    const same = view('Normal');
    expect(withHealthReasons(same, [])).toBe(same);
  });
});
