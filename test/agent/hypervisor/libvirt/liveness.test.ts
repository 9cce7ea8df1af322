// Boot signs of a domain a libvirt site starts, from its file serial console (consoleLiveness is
// what LibvirtHypervisor.liveness reports; test/agent/hypervisor/libvirt/failover.libvirt.test.ts sees `alive` on a real
// domain after a failover).
import { describe, expect, test } from 'vitest';
import { consoleLiveness } from '../../../../src/agent/hypervisor/libvirt/libvirt-hypervisor.ts';
import { guestHealthReason } from '../../../../src/core/replication/health.ts';

const since = 1_000_000;
const started = { since, attached: false };

describe('libvirt guest liveness', () => {
  test('no console output: booting within the timeout, not-booting past it, and then a Warning reason', () => {
    expect(consoleLiveness(started, undefined, 45_000, since + 10_000)).toEqual({ state: 'booting', since, evidence: 'no serial console output yet, 10 s since libvirt started it' });
    const late = consoleLiveness(started, { size: 0, mtimeMs: since + 5 }, 45_000, since + 45_000);
    expect(late).toEqual({ state: 'not-booting', since, evidence: 'no serial console output within 45 s since libvirt started it' });
    expect(guestHealthReason('web', late)).toEqual({
      code: 'guest-not-booting',
      severity: 'Warning',
      message: 'guest-not-booting: VM "web" runs but shows no boot progress: no serial console output within 45 s since libvirt started it',
    });
  });

  test('output written since the start is alive; output left from an earlier run is not', () => {
    expect(consoleLiveness(started, { size: 120, mtimeMs: since + 3000 }, 45_000, since + 4000).state).toBe('alive');
    expect(guestHealthReason('web', consoleLiveness(started, { size: 120, mtimeMs: since + 3000 }, 45_000, since + 60_000))).toBeUndefined();
    expect(consoleLiveness(started, { size: 120, mtimeMs: since - 60_000 }, 45_000, since + 60_000).state).toBe('not-booting');
  });

  test('a domain the agent found running (it restarted) counts any console output', () => {
    const found = { since, attached: true };
    expect(consoleLiveness(found, { size: 10, mtimeMs: since - 3_600_000 }, 45_000, since + 1).state).toBe('alive');
    expect(consoleLiveness(found, undefined, 45_000, since + 50_000).evidence).toBe('no serial console output within 45 s since the agent found it running');
  });
});
