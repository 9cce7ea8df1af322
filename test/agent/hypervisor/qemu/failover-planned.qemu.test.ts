// A real Linux guest (the test guest under QEMU TCG) protected between two agents: it boots on
// host-a from the disk the agent serves, writes a file the test chose; planned failover shuts it
// down through QMP (ACPI power button), ships the final delta and boots it on host-b from the
// replica, where it reads its own file back, gets host-b's address from the seed disk and writes a
// second file; failback brings it home, where it boots again and finds both. The disks are
// sha256-equal on both sides at each handover.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { policy30s } from '../../cluster.ts';
import { writeNextFileScript } from './guest.ts';
import { createGuest, cycle, exportSha, line, pointSha, powerState, protect, qemuSites, sha256, view, type QemuSites } from './failover-sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

let s: QemuSites;
beforeAll(async () => {
  s = await qemuSites();
}, 120_000);
afterAll(async () => s?.cluster.destroy());

const A = randomBytes(3000);
const B = randomBytes(5000);
const RUN_SH = writeNextFileScript(A, B);

describe('planned failover and failback of a real guest', () => {
  test('the guest writes on host-a, boots on host-b from its replica with its file and its address, and comes home with both files', async () => {
    const vm = 'web-01';
    await createGuest(s, vm, RUN_SH, { run: 'seed,script,wait' });
    const id = await protect(s, vm);
    // First boot, on host-a: no seed disk (it is not a failover's VM), a.txt written.
    const tBoot = Date.now();
    await send(s.a, ROUTES.setVmPower, { name: vm }, { power: 'Running' });
    await line(s.serial('host-a', vm), /DRSITE boot /);
    const bootMs = Date.now() - tBoot;
    await line(s.serial('host-a', vm), new RegExp(`DRSITE wrote /files/a.txt sha256=${sha256(A)}`));
    expect((await line(s.serial('host-a', vm), /DRSITE seed (\S+)/))[1]).toBe('none');
    await cycle(s.a, id);

    // Planned failover: a clean shutdown through QMP, then the final delta, then host-b.
    await send(s.a, ROUTES.setVmPower, { name: vm }, { power: 'Off' });
    await line(s.serial('host-a', vm), /DRSITE power button/);
    expect((await powerState(s.a, vm)).power).toBe('Off');
    const homeDisk = await exportSha(s, 'host-a', vm);
    const prep = (await send(s.a, ROUTES.preparePlannedFailover, { id })).json<{ sequence: number; state: string }>();
    expect(prep.state).toBe('PreparedForPlannedFailover');
    expect(await pointSha(s.b, id, prep.sequence)).toBe(homeDisk);
    const t0 = Date.now();
    const fo = (await send(s.b, ROUTES.failover, { id }, {
      recoveryPoint: 'latest',
      adapters: [{ name: 'eth0', network: 'lan-dr', ipv4: { address: '10.20.0.11/24', gateway: '10.20.0.1', dns: ['10.20.0.2'] } }],
    })).json<{ vm: string; recoveryPoint: { sequence: number }; state: string }>();
    const failoverToRunning = Date.now() - t0;
    expect(fo).toMatchObject({ vm, state: 'FailoverWaitingCompletion', recoveryPoint: { sequence: prep.sequence } });
    expect((await powerState(s.b, vm))).toMatchObject({ power: 'Running', detail: 'running' });
    const onB = s.serial('host-b', vm);
    await line(onB, new RegExp(`DRSITE have /files/a.txt sha256=${sha256(A)}`));
    await line(onB, new RegExp(`DRSITE wrote /files/b.txt sha256=${sha256(B)}`));
    expect((await line(onB, /DRSITE seed hostname (\S+)/))[1]).toBe(vm);
    expect((await line(onB, /DRSITE seed addr (\S+) \S+ (\S+)/)).slice(1)).toEqual(['eth0', '10.20.0.11/24']);
    expect((await line(onB, /DRSITE seed gateway \S+ \S+ (\S+)/))[1]).toBe('10.20.0.1');

    // Reverse replication (commits first: the running guest is paused while its disks move, and goes on).
    const rev = (await send(s.b, ROUTES.reverse, { id }, { id: `${id}-back`, replica: { name: 'host-a', endpoint: s.cluster.host('host-a').url }, policy: policy30s })).json<{ state: string }>();
    expect(rev.state).toBe('Replicating');
    expect((await powerState(s.b, vm)).detail).toBe('running');
    await cycle(s.b, `${id}-back`);

    // Failback: the same planned failover the other way.
    await send(s.b, ROUTES.setVmPower, { name: vm }, { power: 'Off' });
    await line(onB, /DRSITE power button/);
    const drDisk = await exportSha(s, 'host-b', vm);
    const back = (await send(s.b, ROUTES.preparePlannedFailover, { id: `${id}-back` })).json<{ sequence: number }>();
    expect(await pointSha(s.a, `${id}-back`, back.sequence)).toBe(drDisk);
    await send(s.a, ROUTES.failover, { id: `${id}-back` }, { adapters: [{ name: 'eth0', network: 'lan' }] });
    const home = s.serial('host-a', vm);
    await line(home, new RegExp(`DRSITE have /files/a.txt sha256=${sha256(A)}`));
    await line(home, new RegExp(`DRSITE have /files/b.txt sha256=${sha256(B)}`));
    await send(s.a, ROUTES.commit, { id: `${id}-back` });
    await send(s.a, ROUTES.reverse, { id: `${id}-back` }, { id: `${id}-again`, replica: { name: 'host-b', endpoint: s.cluster.host('host-b').url }, policy: policy30s });
    expect((await view(s.a, `${id}-again`)).state).toBe('Replicating');
    // Home again and protected again: a clean shutdown, and host-b's latest point equals host-a's disk.
    await send(s.a, ROUTES.setVmPower, { name: vm }, { power: 'Off' });
    const seq = await cycle(s.a, `${id}-again`);
    expect(await pointSha(s.b, `${id}-again`, seq)).toBe(await exportSha(s, 'host-a', vm));
    // host-b's copy of the VM went into its replica: no guest or folder of it is left there.
    expect(existsSync(s.vmDir('host-b', vm))).toBe(false);
    console.log(`test guest: power on to its init's first line ${bootMs} ms; planned failover: failover call to QEMU running on host-b ${failoverToRunning} ms`);
  }, 600_000);
});
