// Unplanned failover of a libvirt domain: the source is lost (`virsh destroy`, as a dead host
// leaves it, no shutdown), and host-b starts the domain from the latest recovery point without
// hearing from host-a. The guest on host-b reads the file it wrote on host-a before the last
// point, gets its failover address from the seed disk, and only host-b's copy runs; commit makes
// it FailedOver.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { sha256, waitForLine } from '../qemu/guest.ts';
import { domState, runningDomains, suffix, virsh } from './libvirt.ts';
import { cycle, protect, view, writingGuest } from './sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const sfx = suffix();
const name = `drt-${sfx}-lost`;
const nets = { a: `drt-${sfx}-ula`, b: `drt-${sfx}-ulb` };
const A = randomBytes(2500);
const B = randomBytes(1500);
const g = writingGuest(sfx, name, Object.values(nets), 'seed,script,wait', { A, B });

describe('unplanned failover of a libvirt domain', () => {
  test('after virsh destroy of the source, host-b boots the latest point: the file written on host-a is there, one running copy', async () => {
    const site = g.sites;
    const dom = g.dom;
    await virsh('start', name);
    await waitForLine(dom.serial, new RegExp(`DRSITE wrote /files/a.txt sha256=${sha256(A)}`), 90_000);
    const id = await protect(site, name);
    const seq = await cycle(site.a, id);

    // host-a is lost: its domain is pulled like a power cord, nothing is shut down or shipped.
    await virsh('destroy', name);
    expect(await domState(name)).toBe('shut off');

    const fo = (await send(site.b, ROUTES.failover, { id }, {
      recoveryPoint: 'latest',
      adapters: [{ name: 'eth0', network: nets.b, ipv4: { address: '10.30.0.7/24', gateway: '10.30.0.1' } }],
    })).json<{ vm: string; state: string; recoveryPoint: { sequence: number } }>();
    expect(fo).toMatchObject({ vm: name, state: 'FailoverWaitingCompletion', recoveryPoint: { sequence: seq } });
    const target = `${site.prefixB}${name}`;
    const onB = join(site.runDirs[1]!, 'vms', name, 'serial.log');
    await waitForLine(onB, new RegExp(`DRSITE have /files/a.txt sha256=${sha256(A)}`), 90_000);
    await waitForLine(onB, new RegExp(`DRSITE wrote /files/b.txt sha256=${sha256(B)}`), 30_000);
    expect((await waitForLine(onB, /DRSITE seed addr \S+ (\S+) (\S+)/, 5000)).slice(1)).toEqual([dom.mac, '10.30.0.7/24']);
    expect(await virsh('dumpxml', target)).toContain(`<source network='${nets.b}'`);
    expect((await runningDomains()).filter((d) => d.includes(name))).toEqual([target]);

    await send(site.b, ROUTES.commit, { id });
    expect((await view(site.b, id)).state).toBe('FailedOver');
    expect((await runningDomains()).filter((d) => d.includes(name))).toEqual([target]);
  }, 240_000);
});
