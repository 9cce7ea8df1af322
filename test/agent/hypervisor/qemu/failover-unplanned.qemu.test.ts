// A real guest that writes all the time (each round: 64 KiB of random data, a line appended to
// /churn.log, sync): a test failover boots `<vm>-Test` from a recovery point with no network and
// its seed address while the guest keeps writing and cycles keep applying; cleanup removes its
// process, overlays and seed. Then site-a's QEMU is killed -9 mid-write: the agent reports the
// crash, and an unplanned failover boots the replica, whose filesystem mounts (journal replay)
// with every round the recovery point had.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createGuest, lastRound, cycle, line, powerState, protect, qemuSites, view, type QemuSites } from './failover-sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

let s: QemuSites;
beforeAll(async () => {
  s = await qemuSites();
}, 120_000);
afterAll(async () => s?.cluster.destroy());

// A failover's VM has a seed disk (mounted on /seed by the `seed` action): it reports what it
// recovered and stops there. The original churns until it is killed.
const RUN_SH = `#!/bin/sh
if [ -f /seed/meta-data ]; then
  echo "DRSITE recovered $(tail -n 1 /mnt/churn.log 2>/dev/null || echo none)"
  exit 0
fi
mkdir -p /mnt/churn
n=0
while :; do
  n=$((n + 1))
  dd if=/dev/urandom of=/mnt/churn/$((n % 16)) bs=65536 count=1 2>/dev/null
  echo $n >> /mnt/churn.log
  sync
  echo "DRSITE churn $n"
done
`;

/** Running, not a zombie (a daemonized QEMU's parent here may be a PID 1 that does not reap). */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat !== '' && !/\) Z /.test(stat);
}

describe('test failover and unplanned failover of a guest that keeps writing', () => {
  test('test failover boots <vm>-Test isolated while replication goes on; after kill -9 the replica boots with the point\'s data', async () => {
    const vm = 'db-01';
    await createGuest(s, vm, RUN_SH, { run: 'seed,script,wait' });
    const id = await protect(s, vm);
    await send(s.a, ROUTES.setVmPower, { name: vm }, { power: 'Running' });
    const onA = s.serial('host-a', vm);
    await line(onA, /DRSITE churn 5\b/);
    const before1 = await lastRound(onA);
    const seq1 = await cycle(s.a, id);

    // Test failover from the latest point: no network, its address from the seed disk.
    const t0 = Date.now();
    const tf = (await send(s.b, ROUTES.testFailover, { id }, {
      recoveryPoint: 'latest',
      adapters: [{ name: 'eth0', ipv4: { address: '10.99.0.5/24' } }],
    })).json<{ testVm: string; recoveryPoint: { sequence: number } }>();
    const testToRunning = Date.now() - t0;
    expect(tf).toMatchObject({ testVm: `${vm}-Test`, recoveryPoint: { sequence: seq1 } });
    const testDir = s.vmDir('host-b', tf.testVm);
    const onTest = join(testDir, 'serial.log');
    const recoveredTest = Number((await line(onTest, /DRSITE recovered (\d+)/))[1]);
    expect(recoveredTest).toBeGreaterThanOrEqual(before1);
    expect((await line(onTest, /DRSITE seed hostname (\S+)/))[1]).toBe(tf.testVm);
    expect((await line(onTest, /DRSITE seed addr (\S+) \S+ (\S+)/)).slice(1)).toEqual(['eth0', '10.99.0.5/24']);
    const testPid = Number((await readFile(join(testDir, 'qemu.pid'), 'utf8')).trim());
    const cmdline = (await readFile(`/proc/${testPid}/cmdline`, 'utf8')).split('\0');
    expect(cmdline).not.toContain('-netdev'); // its NIC has no backend: isolated
    expect(cmdline.some((a) => a.startsWith('virtio-net-pci,mac='))).toBe(true);
    // Meanwhile the original keeps writing and cycles keep applying.
    await line(onA, new RegExp(`DRSITE churn ${before1 + 5}\\b`));
    const seq2 = await cycle(s.a, id);
    expect(seq2).toBeGreaterThan(seq1);
    expect((await view(s.b, id)).state).toBe('Replicating');

    // Cleanup: the test VM's process, overlays and seed are gone.
    const cleaned = (await send(s.b, ROUTES.cleanupTestFailover, { id })).json<{ removed: string[] }>();
    expect(cleaned.removed).toEqual([tf.testVm]);
    expect(await alive(testPid)).toBe(false);
    expect(existsSync(testDir)).toBe(false);

    // Site-a's QEMU dies mid-write (kill -9) right after a cycle.
    const before3 = await lastRound(onA);
    const seq3 = await cycle(s.a, id);
    const pid = Number((await readFile(join(s.vmDir('host-a', vm), 'qemu.pid'), 'utf8')).trim());
    process.kill(pid, 'SIGKILL');
    const atKill = await lastRound(onA);
    const crashed = await (async () => {
      for (let i = 0; i < 200; i++) {
        const p = await powerState(s.a, vm);
        if (p.power === 'Off') return p;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error('the agent never saw the guest die');
    })();
    expect(crashed.detail).toBe('crashed');
    expect(crashed.crashed?.message).toMatch(new RegExp(`QEMU \\(pid ${pid}\\) of VM "${vm}" exited without a shutdown`));

    // Unplanned failover to the latest point: the replica boots, mounts (journal replay) and has its rounds.
    const t1 = Date.now();
    const fo = (await send(s.b, ROUTES.failover, { id }, { recoveryPoint: 'latest', adapters: [{ name: 'eth0', network: 'lan-dr' }] })).json<{ recoveryPoint: { sequence: number }; state: string }>();
    const unplannedToRunning = Date.now() - t1;
    expect(fo).toMatchObject({ state: 'FailoverWaitingCompletion', recoveryPoint: { sequence: seq3 } });
    const onB = s.serial('host-b', vm);
    await line(onB, /DRSITE mounted \/dev\/vd/);
    const recovered = Number((await line(onB, /DRSITE recovered (\d+)/))[1]);
    expect(recovered).toBeGreaterThanOrEqual(before3);
    expect(recovered).toBeLessThanOrEqual(atKill + 1);
    await send(s.b, ROUTES.commit, { id });
    expect((await view(s.b, id)).state).toBe('FailedOver');
    console.log(`test failover to QEMU running: ${testToRunning} ms; unplanned failover to QEMU running: ${unplannedToRunning} ms`);
  }, 600_000);
});
