// Guest health of a domain a libvirt site starts: a test failover of a guest that prints nothing
// on its serial console (its kernel's console is tty0) runs, yet shows no boot sign within host-b's
// bootTimeout (3 s here), so its relationship on host-b turns Warning with guest-not-booting and
// the VM reports not-booting; cleanup of the test failover clears it. (failover.test.ts shows the
// booting guest's `alive`.)
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { RelationshipView } from '../../../../src/transport/agent-api.ts';
import { waitFor } from '../qemu/guest.ts';
import { cleanup, defineGuestDomain, domState, suffix, virsh } from './libvirt.ts';
import { cycle, libvirtSites, protect, view, type LibvirtSites } from './sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const sfx = suffix();
const name = `drt-${sfx}-mute`;
let s: LibvirtSites | undefined;

beforeAll(async () => {
  s = await libvirtSites(sfx, { recoveryBootTimeout: '3s' });
  await defineGuestDomain(name, { run: { run: 'wait' }, cmdline: 'console=tty0 quiet drsite.run=wait' });
}, 180_000);

afterAll(async () => {
  const b = s?.prefixB ?? '';
  await s?.destroy();
  await cleanup([name, `${b}${name}-Test`]);
}, 60_000);

const reasons = (v: RelationshipView) => v.healthReasons.filter((r) => r.startsWith('guest-'));

test('a test failover whose guest never prints is Warning guest-not-booting on host-b past its bootTimeout; cleanup clears it', async () => {
  const site = s!;
  await virsh('start', name);
  const id = await protect(site, name);
  await cycle(site.a, id);
  const testVm = (await send(site.b, ROUTES.testFailover, { id }, {})).json<{ testVm: string }>().testVm;
  expect(await domState(`${site.prefixB}${testVm}`)).toBe('running');

  const late = await waitFor('a guest reason on host-b', async () => {
    const v = await view(site.b, id);
    return reasons(v).length > 0 ? v : undefined;
  }, 30_000);
  expect(late.health).toBe('Warning');
  expect(reasons(late)).toEqual([`guest-not-booting: VM "${testVm}" runs but shows no boot progress: no serial console output within 3 s since libvirt started it`]);
  const vmView = (await send(site.b, ROUTES.getVm, { name: testVm })).json<{ guest?: { state: string } }>();
  expect(vmView.guest?.state).toBe('not-booting');
  // The primary's own domain is not one host-a started: no guest reason there.
  expect(reasons(await view(site.a, id))).toEqual([]);

  await send(site.b, ROUTES.cleanupTestFailover, { id });
  expect(reasons(await view(site.b, id))).toEqual([]);
}, 180_000);
