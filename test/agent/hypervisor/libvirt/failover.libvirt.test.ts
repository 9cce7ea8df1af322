// Failover of a libvirt domain drsite did not create, onto a second libvirt site on the same host
// (host-b's domains carry a prefix, so names never clash on the one libvirtd). The guest (the test
// guest on a qcow2 image, defined with plain `virsh define`) writes a file on host-a. A test
// failover defines `<vm>-Test` from the replicated domain XML on an isolated libvirt network,
// where the guest reads its file; cleanup undefines it and removes its files. The planned
// failover shuts the source down through libvirt (`virsh shutdown`: the guest sees the ACPI power
// button), ships the final delta from the shut-off image's persistent bitmap, and defines and
// starts the domain on host-b: its disk is the agent's export of the recovery point, its interface
// on the mapped libvirt network with its MAC kept, its address from the NoCloud seed disk. The
// guest reads the file it wrote on host-a, and `virsh list` shows exactly one running copy.
// Commit of the running domain shuts it down cleanly (its NBD disks cannot follow new exports)
// and starts it again from its committed disks; an agent restart on host-b shuts it down with the
// agent and starts it again after.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { sha256, waitForLine } from '../qemu/guest.ts';
import { domState, imageSha, runningDomains, suffix, virsh } from './libvirt.ts';
import { cycle, pointSha, protect, view, writingGuest, type LibvirtSites } from './sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const sfx = suffix();
const name = `drt-${sfx}-app`;
const nets = { a: `drt-${sfx}-lan-a`, b: `drt-${sfx}-lan-b`, test: `drt-${sfx}-test` };
const A = randomBytes(3000);
const B = randomBytes(2000);
const g = writingGuest(sfx, name, Object.values(nets), 'seed,script,wait', { A, B });

const guestOf = async (c: LibvirtSites['b'], vm: string) => (await send(c, ROUTES.getVm, { name: vm })).json<{ guest?: { state: string; since: number; evidence: string } }>();
const consoleOnB = (vm: string) => join(g.sites.runDirs[1]!, 'vms', vm, 'serial.log');

describe('failover of a libvirt domain to another libvirt site', () => {
  test('test failover on an isolated network, then planned failover: the guest reads on host-b the file it wrote on host-a', async () => {
    const site = g.sites;
    const dom = g.dom;
    await virsh('start', name);
    await waitForLine(dom.serial, new RegExp(`DRSITE wrote /files/a.txt sha256=${sha256(A)}`), 90_000);
    expect((await waitForLine(dom.serial, /DRSITE seed (\S+)/, 5000))[1]).toBe('none');
    const id = await protect(site, name);
    await cycle(site.a, id);

    // Test failover: <vm>-Test on the isolated network, from the latest point; replication goes on.
    const testVm = `${name}-Test`;
    const tf = (await send(site.b, ROUTES.testFailover, { id }, { network: nets.test })).json<{ testVm: string }>();
    expect(tf.testVm).toBe(testVm);
    const testDomain = `${site.prefixB}${testVm}`;
    expect(await domState(testDomain)).toBe('running');
    const testXml = await virsh('dumpxml', testDomain);
    expect(testXml).toContain(`<source network='${nets.test}'`);
    expect(testXml).toContain(`<mac address='${dom.mac}'/>`);
    expect(testXml).toMatch(/<source protocol='nbd' name='vda'/);
    await waitForLine(consoleOnB(testVm), new RegExp(`DRSITE have /files/a.txt sha256=${sha256(A)}`), 90_000);
    expect((await guestOf(site.b, testVm)).guest).toEqual({ state: 'alive', since: expect.any(Number), evidence: 'serial console output' });
    await cycle(site.a, id); // replication keeps running meanwhile
    expect((await send(site.b, ROUTES.cleanupTestFailover, { id })).json<{ removed: string[] }>().removed).toEqual([testVm]);
    expect(await domState(testDomain)).toBe('absent');
    expect(existsSync(join(site.runDirs[1]!, 'vms', testVm))).toBe(false);
    expect(existsSync(join(site.cluster.host('host-b').dataDir, 'vms', testVm))).toBe(false);

    // Planned failover: shut down through libvirt, final delta from the shut-off image, host-b.
    await send(site.a, ROUTES.setVmPower, { name }, { power: 'Off' });
    await waitForLine(dom.serial, /DRSITE power button/, 30_000);
    expect(await domState(name)).toBe('shut off');
    const prep = (await send(site.a, ROUTES.preparePlannedFailover, { id })).json<{ sequence: number; state: string }>();
    expect(prep.state).toBe('PreparedForPlannedFailover');
    expect(await pointSha(site.b, id, prep.sequence)).toBe(await imageSha(dom.disk));
    const fo = (await send(site.b, ROUTES.failover, { id }, {
      recoveryPoint: 'latest',
      adapters: [{ name: 'eth0', network: nets.b, ipv4: { address: '10.20.0.11/24', gateway: '10.20.0.1' } }],
    })).json<{ vm: string; state: string; recoveryPoint: { sequence: number } }>();
    expect(fo).toMatchObject({ vm: name, state: 'FailoverWaitingCompletion', recoveryPoint: { sequence: prep.sequence } });
    const target = `${site.prefixB}${name}`;
    const onB = consoleOnB(name);
    await waitForLine(onB, new RegExp(`DRSITE have /files/a.txt sha256=${sha256(A)}`), 90_000);
    await waitForLine(onB, new RegExp(`DRSITE wrote /files/b.txt sha256=${sha256(B)}`), 30_000);
    expect((await waitForLine(onB, /DRSITE seed hostname (\S+)/, 5000))[1]).toBe(name);
    expect((await waitForLine(onB, /DRSITE seed addr \S+ (\S+) (\S+)/, 5000)).slice(1)).toEqual([dom.mac, '10.20.0.11/24']);
    // Health on host-b knows the guest booted (its console printed since libvirt started it).
    expect((await guestOf(site.b, name)).guest).toMatchObject({ state: 'alive', evidence: 'serial console output' });
    expect((await view(site.b, id)).healthReasons.filter((r) => r.startsWith('guest-'))).toEqual([]);
    const xml = await virsh('dumpxml', target);
    expect(xml).toContain(`<source network='${nets.b}'`);
    expect(xml).toContain(`<mac address='${dom.mac}'/>`);
    // Exactly one copy of the VM runs: host-b's; host-a's domain is shut off, still defined.
    expect((await runningDomains()).filter((d) => d.includes(name))).toEqual([target]);
    expect(await domState(name)).toBe('shut off');
    expect((await view(site.a, id)).state).toBe('PreparedForPlannedFailover');

    // Commit while it runs: the guest shuts down cleanly (libvirt cannot move a running domain's
    // NBD disks), its disks become images, and it boots again from them with both files.
    await send(site.b, ROUTES.commit, { id });
    expect((await view(site.b, id)).state).toBe('FailedOver');
    await waitForLine(onB, new RegExp(`DRSITE have /files/b.txt sha256=${sha256(B)}`), 90_000);
    expect(await domState(target)).toBe('running');
    expect((await runningDomains()).filter((d) => d.includes(name))).toEqual([target]);

    // host-b's agent restarts: its exports go away, so the domain shuts down cleanly with it and
    // the next agent starts it again on its new exports.
    await site.cluster.stopInProcess('host-b');
    expect(await domState(target)).toBe('shut off');
    await site.cluster.startInProcess('host-b');
    expect(await domState(target)).toBe('running');
    await waitForLine(onB, new RegExp(`DRSITE have /files/b.txt sha256=${sha256(B)}`), 90_000);
  }, 240_000);
});
