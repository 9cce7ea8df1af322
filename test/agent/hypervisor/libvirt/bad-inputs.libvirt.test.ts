// What the libvirt driver refuses, each with one clear error naming the domain, and leaving
// nothing behind: a domain that does not exist, a transient domain, a disk on a network protocol
// and an image format drsite cannot track (vmdk), libvirtd not running (really stopped, then
// started again), and a failover whose domain name already exists on the recovery site.
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { policy30s } from '../../cluster.ts';
import { waitForLine } from '../qemu/guest.ts';
import { cleanup, defineGuestDomain, domState, ensureLibvirtd, IMAGES, suffix, virsh } from './libvirt.ts';
import { libvirtSites, protect, view, type LibvirtSites } from './sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const run = promisify(execFile);
const sfx = suffix();
const n = (what: string) => `drt-${sfx}-${what}`;
let s: LibvirtSites | undefined;

beforeAll(async () => {
  s = await libvirtSites(sfx);
}, 180_000);

afterAll(async () => {
  const b = s?.prefixB ?? '';
  await s?.destroy();
  await ensureLibvirtd();
  await cleanup([n('transient'), n('netdisk'), n('vmdk'), n('web'), `${b}${n('web')}`, n('down')]);
}, 60_000);

async function protectError(vm: string, opts: { listable?: boolean } = {}): Promise<string> {
  const req = { id: `rel-${vm}`, vm, replica: { name: 'host-b', endpoint: s!.cluster.host('host-b').url }, policy: policy30s };
  const e = await send(s!.a, ROUTES.createRelationship, {}, req).then(() => undefined, (x: Error) => x);
  expect(e, `protecting ${vm} was not refused`).toBeInstanceOf(Error);
  // Nothing was recorded: no relationship, no adopted VM (a listed domain is not tracked).
  expect((await send(s!.a, ROUTES.listRelationships, {})).json<unknown[]>()).toEqual([]);
  if (opts.listable === false) return e!.message;
  expect((await send(s!.a, ROUTES.listVms, {})).json<{ name: string; tracking?: string }[]>().find((v) => v.name === vm)?.tracking).toBeUndefined();
  return e!.message;
}

describe('bad inputs on a libvirt site', () => {
  test('a domain that does not exist', async () => {
    const vm = n('missing');
    expect(await protectError(vm)).toMatch(new RegExp(`libvirt domain "${vm}" at qemu:///system: no such domain`));
  });

  test('a transient domain (virsh create, never defined)', async () => {
    const vm = n('transient');
    const dom = await defineGuestDomain(vm, { run: { run: 'wait' } });
    const xml = await virsh('dumpxml', vm);
    await virsh('undefine', vm);
    const file = join(dom.dir, 'transient.xml');
    await writeFile(file, xml);
    await virsh('create', file);
    expect(await virsh('dominfo', vm)).toMatch(/Persistent:\s+no/);
    expect(await protectError(vm)).toMatch(new RegExp(`libvirt domain "${vm}" at qemu:///system is transient`));
  });

  test('a disk on a network protocol (nbd)', async () => {
    const vm = n('netdisk');
    await defineGuestDomain(vm, {
      run: { run: 'wait' },
      extraDisks: [`<disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='nbd' name='data'><host name='192.0.2.10' port='10809'/></source><target dev='vdb' bus='virtio'/></disk>`],
    });
    expect(await protectError(vm)).toMatch(new RegExp(`libvirt domain "${vm}": disk vdb cannot be tracked: it is a network disk \\(protocol nbd\\)`));
  });

  test('an image format drsite cannot track (vmdk)', async () => {
    const vm = n('vmdk');
    await defineGuestDomain(vm, { run: { run: 'wait' }, format: 'vmdk' });
    expect(await protectError(vm)).toMatch(new RegExp(`libvirt domain "${vm}": disk vda cannot be tracked: its format is vmdk: drsite tracks qcow2 images \\(libvirt checkpoints\\) and raw ones \\(QEMU dirty bitmaps\\)`));
  });

  test('libvirtd not running', async () => {
    const vm = n('down');
    await defineGuestDomain(vm, { run: { run: 'wait' } });
    const pid = Number((await readFile('/run/libvirtd.pid', 'utf8')).trim());
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100 && (await run('kill', ['-0', String(pid)]).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 100));
    try {
      expect(await protectError(vm, { listable: false })).toMatch(new RegExp(`libvirt domain "${vm}" at qemu:///system: libvirtd does not answer \\(is it running\\?`));
      // The site's VM list says the same, rather than reporting the domain absent.
      await expect(send(s!.a, ROUTES.listVms, {})).rejects.toThrow(/libvirt at qemu:\/\/\/system: libvirtd does not answer/);
    } finally {
      await ensureLibvirtd();
    }
    expect(await domState(vm)).toBe('shut off'); // nothing was done to it
  });

  test('a failover whose domain name already exists on the recovery site', async () => {
    const vm = n('web');
    const dom = await defineGuestDomain(vm, { run: { run: 'wait' } });
    await virsh('start', vm);
    await waitForLine(dom.serial, /DRSITE waiting/, 90_000);
    const id = await protect(s!, vm);
    // Someone else's domain on host-b already carries the name the failover would define.
    const clash = `${s!.prefixB}${vm}`;
    const xmlFile = join(IMAGES, vm, 'clash.xml');
    await writeFile(xmlFile, `<domain type='qemu'><name>${clash}</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>`);
    await virsh('define', xmlFile);
    const e = await send(s!.b, ROUTES.failover, { id }, { adapters: [{ name: 'eth0' }] }).then(() => undefined, (x: Error) => x);
    expect(e?.message).toMatch(new RegExp(`libvirt domain "${clash}" already exists at qemu:///system on this site \\(drsite did not define it\\), so VM ${vm} cannot be defined here`));
    // Refused before anything changed: the replica still replicates, the other domain is untouched.
    expect((await view(s!.b, id)).state).toBe('Replicating');
    expect(await virsh('dumpxml', clash)).toContain('<memory unit=\'KiB\'>65536</memory>');
    expect(await domState(vm)).toBe('running');
  }, 120_000);
});
