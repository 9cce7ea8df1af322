// Failback to the original libvirt domain. The guest writes a.txt on host-a (a domain the test
// defined with plain `virsh define`), fails over to host-b (planned), writes b.txt there; after
// commit, replication is reversed towards host-a, seeded from the original domain's image (the
// domain stays defined, off). The planned failover back restores the recovery point into the
// original's own qcow2 and starts that same domain: same uuid, same definition, both files, and
// no second domain of the VM on host-a. Protecting it again towards host-b removes host-b's copy.
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { policy30s } from '../../cluster.ts';
import { sha256, waitForLine } from '../qemu/guest.ts';
import { join } from 'node:path';
import { domState, runningDomains, suffix, virsh } from './libvirt.ts';
import { cycle, protect, view, writingGuest } from './sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const sfx = suffix();
const name = `drt-${sfx}-fb`;
const nets = { a: `drt-${sfx}-fa`, b: `drt-${sfx}-fbn` };
const A = randomBytes(1500);
const B = randomBytes(2500);
const g = writingGuest(sfx, name, Object.values(nets), 'script,wait', { A, B });

describe('failback to the original libvirt domain', () => {
  test('the original domain comes back with the recovery point in its own image, not a second domain', async () => {
    const site = g.sites;
    const dom = g.dom;
    const uuid = (await virsh('domuuid', name)).trim();
    await virsh('start', name);
    // As libvirt completed it at the first start (addresses, controllers).
    const original = await virsh('dumpxml', '--inactive', name);
    await waitForLine(dom.serial, new RegExp(`DRSITE wrote /files/a.txt sha256=${sha256(A)}`), 90_000);
    const id = await protect(site, name);
    await cycle(site.a, id);

    // Planned failover to host-b; the guest writes b.txt there.
    await send(site.a, ROUTES.setVmPower, { name }, { power: 'Off' });
    await send(site.a, ROUTES.preparePlannedFailover, { id });
    await send(site.b, ROUTES.failover, { id }, { adapters: [{ name: 'eth0', network: nets.b }] });
    const onB = join(site.runDirs[1]!, 'vms', name, 'serial.log');
    await waitForLine(onB, new RegExp(`DRSITE wrote /files/b.txt sha256=${sha256(B)}`), 90_000);
    await send(site.b, ROUTES.setVmPower, { name }, { power: 'Off' });
    await send(site.b, ROUTES.commit, { id });

    // Reverse replication towards host-a, seeded from the original domain's image; it stays defined.
    const back = `${id}-back`;
    const rev = (await send(site.b, ROUTES.reverse, { id }, { id: back, replica: { name: 'host-a', endpoint: site.cluster.host('host-a').url }, policy: policy30s })).json<{ state: string }>();
    expect(rev.state).toBe('Replicating');
    expect(await domState(name)).toBe('shut off');
    expect((await virsh('checkpoint-list', name, '--name')).trim()).toBe(''); // drsite's checkpoints went with the old relationship

    // Failback: the point goes into the original's image and the original domain starts.
    const prep = (await send(site.b, ROUTES.preparePlannedFailover, { id: back })).json<{ sequence: number }>();
    const fb = (await send(site.a, ROUTES.failover, { id: back }, {})).json<{ vm: string; state: string; recoveryPoint: { sequence: number } }>();
    expect(fb).toMatchObject({ vm: name, state: 'FailoverWaitingCompletion', recoveryPoint: { sequence: prep.sequence } });
    await waitForLine(dom.serial, new RegExp(`DRSITE have /files/b.txt sha256=${sha256(B)}`), 90_000);
    expect(await virsh('dumpxml', '--inactive', name)).toBe(original);
    expect((await virsh('domuuid', name)).trim()).toBe(uuid);
    expect((await runningDomains()).filter((d) => d.includes(name))).toEqual([name]);
    await send(site.a, ROUTES.commit, { id: back });
    expect((await view(site.a, back)).state).toBe('FailedOver');

    // Protected again towards host-b: host-b's copy goes into the replica, its domain undefined.
    const again = `${id}-again`;
    const view2 = (await send(site.a, ROUTES.reverse, { id: back }, { id: again, replica: { name: 'host-b', endpoint: site.cluster.host('host-b').url }, policy: policy30s })).json<{ state: string }>();
    expect(view2.state).toBe('Replicating');
    expect(await domState(`${site.prefixB}${name}`)).toBe('absent');
    await cycle(site.a, again);
    expect((await view(site.a, again)).state).toBe('Replicating');
    expect((await virsh('list', '--all', '--name')).split('\n').filter((d) => d.includes(name))).toEqual([name]);
  }, 240_000);
});
