// disks.exclude on a libvirt domain: a disk drsite cannot track (here a network disk, an NBD
// export the test serves with qemu-nbd) is refused with its name, and protecting the domain with
// that disk excluded works: the other disk is tracked by checkpoints (the excluded one marked
// checkpoint='no'), and each point equals its image at the cut.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { policy30s } from '../../cluster.ts';
import { waitForLine } from '../qemu/guest.ts';
import { cleanup, defineGuestDomain, IMAGES, imageSha, suffix, virsh, type GuestDomain } from './libvirt.ts';
import { cycle, libvirtSites, pointSha, view, type LibvirtSites } from './sites.ts';
import { untilListening } from '../../../support/sockets.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const sfx = suffix();
const name = `drt-${sfx}-ex`;
let s: LibvirtSites | undefined;
let dom: GuestDomain;
let nbd: ChildProcess | undefined;

beforeAll(async () => {
  s = await libvirtSites(sfx);
  const dir = join(IMAGES, name);
  const socket = join(dir, 'data.sock');
  dom = await defineGuestDomain(name, {
    run: { run: 'churn' },
    extraDisks: [`<disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='nbd' name='data'><host transport='unix' socket='${socket}'/></source><target dev='vdb' bus='virtio'/></disk>`],
  });
  const data = join(dir, 'data.raw');
  await writeFile(data, '');
  await truncate(data, 8 << 20);
  nbd = spawn('qemu-nbd', ['-t', '-f', 'raw', '-x', 'data', '--socket', socket, data], { stdio: 'ignore' });
  await untilListening(socket, { proc: nbd, what: 'qemu-nbd' });
  await chmod(socket, 0o666); // libvirt's QEMU connects as its own user
}, 180_000);

afterAll(async () => {
  await s?.destroy();
  await cleanup([name]);
  if (nbd?.pid && nbd.exitCode === null) process.kill(nbd.pid, 'SIGTERM');
  await rm(join(IMAGES, name), { recursive: true, force: true });
}, 60_000);

const request = (excludeDisks?: string[]) => ({ id: `rel-${name}`, vm: name, replica: { name: 'host-b', endpoint: s!.cluster.host('host-b').url }, policy: policy30s, ...(excludeDisks && { excludeDisks }) });

describe('disks.exclude on a libvirt domain', () => {
  test('a network disk is refused by name, and protection with it excluded tracks the other disk by checkpoints', async () => {
    await virsh('start', name);
    await waitForLine(dom.serial, /DRSITE churn 10\b/, 90_000);
    await expect(send(s!.a, ROUTES.createRelationship, {}, request())).rejects.toThrow(new RegExp(`libvirt domain "${name}": disk vdb cannot be tracked: it is a network disk \\(protocol nbd\\).*or exclude it`));
    await expect(send(s!.a, ROUTES.createRelationship, {}, request(['vdc']))).rejects.toThrow(new RegExp(`libvirt domain "${name}" has no disk vdc to exclude \\(its disks: vda, vdb\\)`));

    const id = `rel-${name}`;
    await send(s!.a, ROUTES.createRelationship, {}, request(['vdb']));
    await send(s!.a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
    const v = await view(s!.a, id);
    expect(v.state).toBe('Replicating');
    expect((await send(s!.a, ROUTES.listVms, {})).json<{ name: string; tracking?: string; disks: { name: string }[] }[]>().find((x) => x.name === name)).toMatchObject({ disks: [{ name: 'vda' }], tracking: expect.stringMatching(/libvirt checkpoints/) });
    const [cp] = (await virsh('checkpoint-list', name, '--name')).trim().split('\n');
    expect(await virsh('checkpoint-dumpxml', name, cp!, '--no-domain')).toMatch(/<disk name='vdb' checkpoint='no'\/>/);

    await waitForLine(dom.serial, /DRSITE churn 30\b/, 90_000);
    await virsh('suspend', name);
    try {
      const seq = await cycle(s!.a, id);
      expect(await pointSha(s!.b, id, seq, 'vda')).toBe(await imageSha(dom.disk));
    } finally {
      await virsh('resume', name);
    }
  }, 180_000);
});
