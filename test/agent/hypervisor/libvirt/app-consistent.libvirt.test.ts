// Application-consistent points of a libvirt domain: `virsh domfsfreeze` through the guest's
// qemu-guest-agent before the cut and `virsh domfsthaw` after it (the guest writes on), the point
// marked `app`. A domain whose guest runs no agent gets crash-consistent points and the same
// Warning as the qemu driver's (reason app-consistency), carrying libvirt's reason.
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RecoveryPointInfo } from '../../../../src/transport/agent-api.ts';
import { policy30s } from '../../cluster.ts';
import { waitForLine } from '../qemu/guest.ts';
import { cleanup, defineGuestDomain, suffix, virsh } from './libvirt.ts';
import { cycle, libvirtSites, view, type LibvirtSites } from './sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const sfx = suffix();
const withAgent = `drt-${sfx}-app`;
const without = `drt-${sfx}-plain`;
let s: LibvirtSites | undefined;
const hourly = { ...policy30s, appConsistentEvery: '1h' };

beforeAll(async () => {
  s = await libvirtSites(sfx);
}, 180_000);

afterAll(async () => {
  await s?.destroy();
  await cleanup([withAgent, without]);
}, 60_000);

async function protectWith(vm: string): Promise<string> {
  const id = `rel-${vm}`;
  await send(s!.a, ROUTES.createRelationship, {}, { id, vm, replica: { name: 'host-b', endpoint: s!.cluster.host('host-b').url }, policy: hourly });
  await send(s!.a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
  return id;
}

const points = async (id: string) => (await send(s!.b, ROUTES.recoveryPoints, { id })).json<RecoveryPointInfo[]>();

describe('application-consistent points of a libvirt domain', () => {
  test('a guest with an agent: frozen with domfsfreeze for the cut, thawed after it, the point marked app', async () => {
    const dom = await defineGuestDomain(withAgent, { run: { run: 'qga,churn' } });
    await virsh('start', withAgent);
    await waitForLine(dom.serial, /DRSITE qga started/, 90_000);
    await waitForLine(dom.serial, /DRSITE churn 10\b/, 90_000);
    const id = await protectWith(withAgent);
    const appSeq = await cycle(s!.a, id);
    // Thawed: the guest writes on.
    const rounds = async () => Math.max(0, ...[...(await readFile(dom.serial, 'utf8')).matchAll(/DRSITE churn (\d+)/g)].map((m) => Number(m[1])));
    const after = await rounds();
    await waitForLine(dom.serial, new RegExp(`DRSITE churn ${Math.ceil((after + 20) / 10) * 10}\\b`), 60_000);
    const crashSeq = await cycle(s!.a, id); // within the hour: crash-consistent
    const pts = await points(id);
    expect(pts.find((p) => p.sequence === appSeq)?.consistency).toBe('app');
    expect(pts.find((p) => p.sequence === crashSeq)?.consistency).toBe('crash');
    expect((await view(s!.a, id)).health).toBe('Normal');
  }, 120_000);

  test('a guest without an agent: crash-consistent points, health Warning saying why', async () => {
    const dom = await defineGuestDomain(without, { run: { run: 'churn' } });
    await virsh('start', without);
    await waitForLine(dom.serial, /DRSITE churn 10\b/, 90_000);
    const id = await protectWith(without);
    const seq = await cycle(s!.a, id);
    expect((await points(id)).find((p) => p.sequence === seq)?.consistency).toBe('crash');
    const v = await view(s!.a, id);
    expect(v.state).toBe('Replicating');
    expect(v.health).toBe('Warning');
    expect(v.healthReasons.join('\n')).toMatch(new RegExp(`no application-consistent point: VM "${without}": guest agent: libvirt domain "${without}" at qemu:///system: virsh domfsfreeze failed: .*[Gg]uest agent`));
  }, 120_000);
});
