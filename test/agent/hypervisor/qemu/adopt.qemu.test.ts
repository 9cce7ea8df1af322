// An agent restart, simulated by a new QemuHypervisor on the same root after the first let go:
// it re-attaches to a guest still running, finishes the power-off of one that powered off while
// nobody watched, and records one whose QEMU died meanwhile as crashed.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuHypervisor } from '../../../../src/agent/hypervisor/qemu/qemu-hypervisor.ts';
import type { VmRuntime } from '../../../../src/agent/hypervisor/vm-runtime.ts';
import { tempDir } from '../../../nbd/helpers.ts';
import { boot, createGuestVm, nbdDirOf, serve, testGuest, waitFor, waitForLine } from './guest.ts';

let dir: { path: string; remove(): Promise<void> };
let root: string;
const runtimes = new Map<string, VmRuntime>();
const drivers: QemuHypervisor[] = [];

function driver(): QemuHypervisor {
  const hv = new QemuHypervisor(root, { accel: 'tcg' });
  drivers.push(hv);
  return hv;
}

beforeAll(async () => {
  await testGuest();
  dir = await tempDir('qemu-adopt');
  root = join(dir.path, 'vms');
}, 180_000);

afterAll(async () => {
  const hv = driver();
  for (const vm of await hv.list()) await hv.setPower(vm.name, 'Off', { nbdSocket: '', force: true, timeoutMs: 0 }).catch(() => {});
  for (const d of drivers) await d.close();
  for (const rt of runtimes.values()) await rt.stop();
  await dir.remove();
});

async function start(hv: QemuHypervisor, name: string, run: string): Promise<string> {
  const vm = await createGuestVm(hv, name);
  const rt = await serve(hv, vm, nbdDirOf(dir.path));
  runtimes.set(name, rt);
  await boot(hv, name, { run });
  await hv.setPower(name, 'Running', { nbdSocket: rt.socketPath });
  return rt.socketPath;
}

const pidOf = async (hv: QemuHypervisor, name: string) => Number((await readFile(join(hv.vmDir(name), 'qemu.pid'), 'utf8')).trim());

describe('QemuHypervisor adopt', () => {
  it('re-attaches after an agent restart to running, powered-off and vanished guests', async () => {
    const first = driver();
    const nbd = await start(first, 'alive', 'wait');
    await start(first, 'quitter', 'write');
    await start(first, 'victim', 'wait');
    await waitForLine(first.consolePath('alive'), /DRSITE waiting/, 40_000);
    await waitForLine(first.consolePath('victim'), /DRSITE waiting/, 40_000);
    const alivePid = await pidOf(first, 'alive');
    const victimPid = await pidOf(first, 'victim');
    // A second driver while the first holds the QMP connection: it sees a running guest it cannot
    // drive, and refuses to start a second QEMU on the same disks.
    const rival = driver();
    const seen = await rival.status('alive');
    expect(seen.power).toBe('Running');
    expect(seen.detail).toMatch(new RegExp(`^not attached: VM "alive": cannot attach to its QEMU \\(pid ${alivePid}\\): no QMP greeting`));
    await expect(rival.setPower('alive', 'Running', { nbdSocket: nbd })).rejects.toThrow(`VM "alive": cannot attach to its QEMU (pid ${alivePid})`);

    // The agent goes away; QEMU does not.
    await first.close();

    // While nobody watches: one guest powers itself off, one QEMU is killed.
    await waitForLine(first.consolePath('quitter'), /DRSITE poweroff/, 40_000);
    process.kill(victimPid, 'SIGKILL');
    await waitFor('victim gone', async () => (await readFile(`/proc/${victimPid}/stat`, 'utf8').then((s) => / Z /.test(s), () => true)) || undefined, 10_000);

    const second = driver();
    await second.adopt();
    expect(await second.status('alive')).toEqual({ power: 'Running', detail: 'running' });
    expect(await pidOf(second, 'alive')).toBe(alivePid);
    expect(await second.status('quitter')).toEqual({ power: 'Off', detail: 'stopped' });
    expect((await second.get('quitter')).power).toBe('Off');
    const victim = await second.status('victim');
    expect(victim.crashed?.message).toBe(`QEMU (pid ${victimPid}) of VM "victim" exited while no agent was watching it, without a clean power-off`);
    expect(victim.power).toBe('Off');

    // The adopted guest is fully under the new driver's control.
    expect((await second.setPower('alive', 'Off', { nbdSocket: nbd, timeoutMs: 30_000 })).power).toBe('Off');
    await waitForLine(second.consolePath('alive'), /DRSITE power button/, 1000);
    expect(await second.status('alive')).toEqual({ power: 'Off', detail: 'stopped' });
    // Starting the crashed one again clears its crash record.
    await boot(second, 'victim', { run: 'read', path: '/nothing' });
    await second.setPower('victim', 'Running', { nbdSocket: runtimes.get('victim')!.socketPath });
    await waitForLine(second.consolePath('victim'), /DRSITE read \/nothing missing/, 40_000);
    await waitFor('victim off', async () => ((await second.status('victim')).power === 'Off' ? true : undefined), 40_000);
    expect(await second.status('victim')).toEqual({ power: 'Off', detail: 'stopped' });
  });
});
