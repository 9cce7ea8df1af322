// What an operator sees of a fault (issue 13, part 8): the reasons and errors the agents report
// (the reliability suites check that each fault produces them) reach `drsite status` as a line
// per affected ProtectedVM and `drsite events` as an event, once per change, folded while the same
// fault repeats, and a HealthNormal event when it clears. A real vault (SQLite, then etcd); the observations are
// the ones a pass builds from the agents' views.
import { expect, test } from 'vitest';
import { problems, readStatus } from '../../src/cli/status.ts';
import type { ObservedRelationship } from '../../src/model/observed.ts';
import type { Observation } from '../../src/reconciler/observe-sites.ts';
import { recordObservation } from '../../src/reconciler/record-status.ts';
import { Vault } from '../../src/vault/vault.ts';
import { BACKENDS, useVaultPlaces } from '../vault/backends.ts';
import { desired, pvm, relFor } from './fixtures.ts';

const place = useVaultPlaces();

const d = desired({ vms: [pvm('web-01', { primary: 'site-a', replica: 'site-b', policy: 'gold' })] });
const v = d.protectedVms[0];

function pass(vault: Vault, at: string, over: Partial<ObservedRelationship>): void {
  const rel = relFor(d, v, over);
  const obs: Observation = {
    observed: { observedAt: at, relationships: { 'web-01': rel }, recoveryPlans: {}, sites: {} },
    snapshots: new Map(),
    current: new Map(),
  };
  recordObservation(vault, d, obs);
}

const diskFull = 'low-disk: /srv/replicas/site-a/rel-web-01/undo: no space left on the device (needs about 12 MiB more)';

test.each(BACKENDS)('%s: a fault becomes a status line and one event per change; repeats fold; its end is an event too', (backend) => {
  const vault = Vault.open(place(backend));
  try {
    pass(vault, '2026-03-01T12:00:00Z', {});
    expect(vault.listEvents({ name: 'web-01', limit: 10 })).toEqual([]);
    expect(problems(readStatus(vault))).toEqual([]);

    // The replica's disk fills: the primary retries on the recoverable schedule.
    const failure = {
      health: 'Warning' as const,
      healthReasons: [`replication is failing and retrying: ${diskFull}`],
      lastError: { code: 'low-disk', message: diskFull.replace(/^low-disk: /, ''), at: '2026-03-01T12:00:30Z' },
      nextRetryAt: '2026-03-01T12:01:30Z',
    };
    pass(vault, '2026-03-01T12:00:31Z', failure);
    pass(vault, '2026-03-01T12:00:33Z', failure); // the next pass sees the same: nothing new
    let events = vault.listEvents({ name: 'web-01', limit: 10 });
    expect(events.map((e) => [e.type, e.reason, e.count])).toEqual([['Warning', 'ReplicationError', 1], ['Warning', 'HealthWarning', 1]]);
    expect(events[1].message).toContain('/srv/replicas/site-a/rel-web-01/undo: no space left on the device (needs about 12 MiB more)');
    expect(events[0].message).toBe(`low-disk: ${failure.lastError.message}`);
    const lines = problems(readStatus(vault));
    expect(lines).toContain(`web-01: Warning - replication is failing and retrying: ${diskFull} (next retry 2026-03-01T12:01:30Z)`);
    expect(lines.join('\n')).not.toMatch(/^\s+at /m);

    // The retry fails the same way: the same event, counted.
    const again = { ...failure.lastError, at: '2026-03-01T12:01:30Z' };
    pass(vault, '2026-03-01T12:01:31Z', { ...failure, lastError: again, nextRetryAt: '2026-03-01T12:03:30Z' });
    events = vault.listEvents({ name: 'web-01', limit: 10 });
    expect(events.map((e) => [e.reason, e.count])).toEqual([['ReplicationError', 2], ['HealthWarning', 1]]);

    // Space freed, the retry succeeds: health Normal again, said once; the status line goes (the
    // agent keeps reporting its last error for the record).
    pass(vault, '2026-03-01T12:03:31Z', { lastError: again });
    pass(vault, '2026-03-01T12:03:33Z', { lastError: again });
    events = vault.listEvents({ name: 'web-01', limit: 10 });
    expect(events[0]).toMatchObject({ type: 'Normal', reason: 'HealthNormal', count: 1 });
    expect(events[0].message).toContain('was Warning: replication is failing and retrying: low-disk');
    expect(events).toHaveLength(3);
    expect(problems(readStatus(vault))).toEqual([]);

    // A refusal that needs an operator: Critical, with the agent's message.
    const refused = 'site-b refused site-a: certificate CN site-a is not in allowedPrimaries';
    pass(vault, '2026-03-01T12:04:00Z', { state: 'Critical', health: 'Critical', healthReasons: [`non-recoverable: ${refused}`], lastError: { code: 'authorization', message: refused, at: '2026-03-01T12:03:59Z' } });
    events = vault.listEvents({ name: 'web-01', limit: 10 });
    expect(events.slice(0, 2).map((e) => [e.type, e.reason, e.message])).toEqual([
      ['Warning', 'ReplicationError', `authorization: ${refused}`],
      ['Warning', 'HealthCritical', `non-recoverable: ${refused}`],
    ]);
    expect(problems(readStatus(vault))).toContain(`web-01: Critical - non-recoverable: ${refused}`);
  } finally {
    vault.close();
  }
});
