// The cloud-init NoCloud seed: its files as data, the vfat image mtools reads back, and a real
// guest that finds the seed disk and applies the addresses to the NICs with the matching MACs.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { macFor } from '../../../../src/agent/hypervisor/qemu/qemu-args.ts';
import { QemuHypervisor } from '../../../../src/agent/hypervisor/qemu/qemu-hypervisor.ts';
import { buildSeedImage, metaData, networkConfig } from '../../../../src/agent/hypervisor/qemu/seed.ts';
import type { VmRuntime } from '../../../../src/agent/hypervisor/vm-runtime.ts';
import type { VmAdapter, VmDefinition } from '../../../../src/model/hypervisor.ts';
import { tempDir } from '../../../nbd/helpers.ts';
import { boot, createGuestVm, nbdDirOf, serve, testGuest, waitFor, waitForLine } from './guest.ts';

const run = promisify(execFile);

let dir: { path: string; remove(): Promise<void> };
let hv: QemuHypervisor;
let rt: VmRuntime | undefined;

beforeAll(async () => {
  await testGuest();
  dir = await tempDir('qemu-seed');
  // The `user` netdev with restrict=on: the guest reaches nothing outside, not even the host.
  // TCG: on some nested hosts the `auto` probe guest (a real-mode boot sector) runs under KVM while
  // a Linux guest then hangs there without a line of output, so tests that boot real guests say tcg.
  hv = new QemuHypervisor(join(dir.path, 'vms'), { accel: 'tcg', networks: { lan: 'user,restrict=on' } });
}, 180_000);

afterAll(async () => {
  for (const vm of await hv.list()) await hv.setPower(vm.name, 'Off', { nbdSocket: '', force: true, timeoutMs: 0 }).catch(() => {});
  await rt?.stop();
  await dir.remove();
});

const adapters: VmAdapter[] = [
  { name: 'lan', network: 'lan', ipv4: { address: '10.20.0.11/24', gateway: '10.20.0.1', dns: ['10.20.0.53'] }, ipv6: { address: 'fd00:20::11/64', gateway: 'fd00:20::1' } },
  { name: 'backup', mac: '52:54:00:0A:0B:0C', ipv4: { address: '192.168.50.5/24' } },
];

describe('cloud-init NoCloud seed', () => {
  it('writes network-config v2 matched by MAC and meta-data with the hostname', () => {
    const vm: VmDefinition = { name: 'web-test', power: 'Off', disks: [], adapters };
    const lanMac = macFor('web-test', adapters[0]!);
    expect(lanMac).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    expect(macFor('web-test', adapters[1]!)).toBe('52:54:00:0a:0b:0c');
    expect(networkConfig(vm)).toBe([
      'version: 2',
      'ethernets:',
      '  "lan":',
      '    match:',
      `      macaddress: "${lanMac}"`,
      '    addresses:',
      '      - "10.20.0.11/24"',
      '      - "fd00:20::11/64"',
      '    routes:',
      '      - to: "0.0.0.0/0"',
      '        via: "10.20.0.1"',
      '      - to: "::/0"',
      '        via: "fd00:20::1"',
      '    nameservers:',
      '      addresses:',
      '        - "10.20.0.53"',
      '  "backup":',
      '    match:',
      '      macaddress: "52:54:00:0a:0b:0c"',
      '    addresses:',
      '      - "192.168.50.5/24"',
      '',
    ].join('\n'));
    expect(metaData(vm, { instanceId: 'i-1' })).toBe('instance-id: "i-1"\nlocal-hostname: "web-test"\n');
    expect(() => networkConfig({ ...vm, adapters: [adapters[0]!, adapters[0]!] })).toThrow('VM "web-test": two adapters are named "lan"');
  });

  it('builds a vfat image labelled cidata that mtools reads back', async () => {
    const vm: VmDefinition = { name: 'web-test', power: 'Off', disks: [], adapters };
    const img = join(dir.path, 'seed-data.img');
    await buildSeedImage(img, vm, { instanceId: 'i-2' });
    const { stdout: label } = await run('mlabel', ['-s', '-i', img, '::']);
    expect(label.trim()).toMatch(/Volume label is cidata/i);
    const { stdout: meta } = await run('mtype', ['-i', img, '::meta-data']);
    expect(meta).toBe(metaData(vm, { instanceId: 'i-2' }));
    const { stdout: net } = await run('mtype', ['-i', img, '::network-config']);
    expect(net).toBe(networkConfig(vm));
  });

  it('a guest with the seed attached comes up with its declared addresses on the matching NICs', async () => {
    const vm = await createGuestVm(hv, 'web-test', { adapters });
    rt = await serve(hv, vm, nbdDirOf(dir.path));
    const seed = join(hv.vmDir('web-test'), 'seed.img');
    await buildSeedImage(seed, vm);
    await boot(hv, 'web-test', { run: 'seed' });
    await hv.setPower('web-test', 'Running', { nbdSocket: rt.socketPath, seedImage: seed });
    await waitForLine(hv.consolePath('web-test'), /DRSITE poweroff/, 40_000);
    await waitFor('off', async () => ((await hv.status('web-test')).power === 'Off' ? true : undefined), 20_000);

    const lines = (await readFile(hv.consolePath('web-test'), 'utf8')).split(/\r?\n/).filter((l) => l.startsWith('DRSITE seed')).map((l) => l.replace(/ eth\d+ /, ' IF '));
    const lan = macFor('web-test', adapters[0]!);
    expect(lines).toEqual([
      'DRSITE seed hostname web-test',
      `DRSITE seed addr IF ${lan} 10.20.0.11/24`,
      `DRSITE seed addr IF ${lan} fd00:20::11/64`,
      `DRSITE seed gateway IF ${lan} 10.20.0.1`,
      `DRSITE seed gateway IF ${lan} fd00:20::1`,
      `DRSITE seed dns IF ${lan} 10.20.0.53`,
      'DRSITE seed addr IF 52:54:00:0a:0b:0c 192.168.50.5/24',
    ]);
  });
});
