// Bad input and faults around real guests, each a clear error naming the VM with nothing lost and
// the agent serving its other VMs: a site whose emulator is missing, a kernel path that is not a
// file and a file that is not a kernel, a guest that ignores the power button (refused within the
// timeout, stopped hard only with force), and an agent restart under a running guest (the guest's
// disk I/O waits for the new agent's exports, the agent adopts it, replication goes on).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { TerminalError } from '../../../../src/model/errors.ts';
import { Cluster } from '../../cluster.ts';
import { testGuest, append } from './guest.ts';
import { createGuest, lastRound, cycle, line, powerState, protect, QEMU_SITE, view, type QemuSites } from './failover-sites.ts';
import { readFile } from 'node:fs/promises';
import { ROUTES, send } from '../../../support/agent-client.ts';

let s: QemuSites;
let noEmulator: Awaited<ReturnType<Cluster['client']>>;
beforeAll(async () => {
  await testGuest();
  const cluster = await Cluster.create([
    { name: 'host-a', config: QEMU_SITE },
    { name: 'host-b', config: QEMU_SITE },
    { name: 'host-c', config: ['hypervisor: qemu', 'qemu: { accel: tcg, emulator: /nonexistent/qemu-system-x86_64 }'] },
  ]);
  for (const h of ['host-a', 'host-b', 'host-c']) await cluster.startInProcess(h);
  s = {
    cluster,
    a: await cluster.client('host-a', undefined, 180_000),
    b: await cluster.client('host-b', undefined, 180_000),
    vmDir: (host, vm) => join(cluster.host(host).dataDir, 'vms', vm),
    serial: (host, vm) => join(cluster.host(host).dataDir, 'vms', vm, 'serial.log'),
  };
  noEmulator = await cluster.client('host-c');
}, 120_000);
afterAll(async () => s?.cluster.destroy());

async function refusal(p: Promise<unknown>): Promise<TerminalError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  if (!TerminalError.is(e)) throw new Error(`expected a refusal, got ${String(e)}`);
  return e;
}

const CHURN = `#!/bin/sh
n=$(tail -n 1 /mnt/churn.log 2>/dev/null || echo 0)
while :; do
  n=$((n + 1))
  dd if=/dev/urandom of=/mnt/block bs=65536 count=1 2>/dev/null
  echo $n >> /mnt/churn.log
  sync
  echo "DRSITE churn $n"
  sleep 0.2
done
`;

describe('real guests: bad input and faults', () => {
  test('a running, protected guest is not disturbed by the refusals below', async () => {
    await createGuest(s, 'steady', CHURN, { run: 'script' });
    const id = await protect(s, 'steady');
    await send(s.a, ROUTES.setVmPower, { name: 'steady' }, { power: 'Running' });
    await line(s.serial('host-a', 'steady'), /DRSITE churn 3\b/);
    expect(await cycle(s.a, id)).toBeGreaterThan(0);
  }, 120_000);

  test('missing emulator: a clear error naming the VM and the emulator; the VM stays defined and off', async () => {
    const g = await testGuest();
    const e = await refusal(send(noEmulator, ROUTES.createVm, {}, { name: 'orphan', disks: [{ name: 'os', size: 1 << 20 }], boot: { kernel: g.kernel, initrd: g.initrd } }));
    expect(e.code).toBe('not-found');
    expect(e.message).toContain('VM "orphan": emulator "/nonexistent/qemu-system-x86_64" not found');
    expect((await send(noEmulator, ROUTES.getVm, { name: 'orphan' })).json<{ power: string }>().power).toBe('Off');
    expect((await send(noEmulator, ROUTES.health, {})).json<{ vms: number }>().vms).toBe(1);
  });

  test('a kernel path that is not a file, and a file that is not a kernel: refused naming the VM', async () => {
    const missing = await refusal(send(s.a, ROUTES.createVm, {}, { name: 'nokernel', disks: [{ name: 'os', size: 1 << 20 }], boot: { kernel: '/nonexistent/vmlinuz' } }));
    expect(missing.code).toBe('invalid-argument');
    expect(missing.message).toContain('VM "nokernel": boot kernel /nonexistent/vmlinuz is not a readable file');
    const junk = join(s.cluster.root, 'junk-kernel');
    await writeFile(junk, 'not a kernel image\n'.repeat(100));
    const bad = await refusal(send(s.a, ROUTES.createVm, {}, { name: 'badkernel', disks: [{ name: 'os', size: 1 << 20 }], boot: { kernel: junk } }));
    expect(bad.code).toBe('invalid-state');
    expect(bad.message).toMatch(/VM "badkernel": QEMU did not start: .*kernel/);
    for (const vm of ['nokernel', 'badkernel']) expect((await powerState(s.a, vm)).power).toBe('Off');
  });

  test('a guest that ignores the power button: refused within the timeout and still running; force stops it', async () => {
    const g = await testGuest();
    await send(s.a, ROUTES.createVm, {}, { name: 'stubborn', disks: [{ name: 'os', size: 1 << 20 }], boot: { kernel: g.kernel, initrd: g.initrd, append: append({ run: 'hang' }) } });
    await line(s.serial('host-a', 'stubborn'), /DRSITE hanging/);
    const e = await refusal(send(s.a, ROUTES.setVmPower, { name: 'stubborn' }, { power: 'Off', timeoutMs: 2000 }));
    expect(e.code).toBe('invalid-state');
    expect(e.message).toContain('VM "stubborn" did not power off within 2000 ms of an ACPI power-down (system_powerdown); it is still running');
    expect(await powerState(s.a, 'stubborn')).toMatchObject({ power: 'Running', detail: 'running' });
    const off = (await send(s.a, ROUTES.setVmPower, { name: 'stubborn' }, { power: 'Off', timeoutMs: 1000, force: true })).json<{ power: string }>();
    expect(off.power).toBe('Off');
    expect(await powerState(s.a, 'stubborn')).toMatchObject({ power: 'Off', detail: 'stopped' });
  });

  test('the protected guest kept running and replicating through all of it', async () => {
    const before = await lastRound(s.serial('host-a', 'steady'));
    await line(s.serial('host-a', 'steady'), new RegExp(`DRSITE churn ${before + 3}\\b`));
    expect(await cycle(s.a, 'rel-steady')).toBeGreaterThan(1);
    expect((await view(s.a, 'rel-steady')).state).toBe('Replicating');
  }, 60_000);

  test('an agent restart under a running guest: its I/O waits for the new exports, the agent adopts it, replication goes on', async () => {
    const serial = s.serial('host-a', 'steady');
    const pid = Number((await readFile(join(s.vmDir('host-a', 'steady'), 'qemu.pid'), 'utf8')).trim());
    await s.cluster.stopInProcess('host-a');
    const whileDown = await lastRound(serial);
    await new Promise((r) => setTimeout(r, 1500));
    await s.cluster.startInProcess('host-a');
    s.a = await s.cluster.client('host-a', undefined, 180_000);
    expect(await powerState(s.a, 'steady')).toMatchObject({ power: 'Running', detail: 'running' });
    expect(Number((await readFile(join(s.vmDir('host-a', 'steady'), 'qemu.pid'), 'utf8')).trim())).toBe(pid); // the same QEMU
    await line(serial, new RegExp(`DRSITE churn ${whileDown + 5}\\b`), 60_000);
    const seq = await cycle(s.a, 'rel-steady');
    expect(seq).toBeGreaterThan(2);
    expect((await view(s.a, 'rel-steady')).state).toBe('Replicating');
  }, 120_000);
});
