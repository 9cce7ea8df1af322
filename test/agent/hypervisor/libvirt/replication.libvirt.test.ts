// A libvirt domain drsite did not create (defined by the test with plain `virsh define`, running
// the test guest on a qcow2 image) is protected without restarting its guest: the initial copy
// and every delta come from libvirt checkpoints and pull-mode backup jobs while the guest keeps
// writing. Each point is sha256-equal to the domain's image at its cut (the test pauses the domain
// for the cut, so it knows what the image held). A libvirtd restart loses nothing: the checkpoint
// bitmaps are persistent, so the next delta is incremental and still equal, with no resync; so
// does an agent restart. A checkpoint deleted behind drsite's back makes the relationship
// ResynchronizationRequired, and the resync's point is equal again, after which deltas resume.
// A guest shutdown and start keep the chain too (the bitmap is saved in, and loaded from, the qcow2).
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { waitForLine } from '../qemu/guest.ts';
import { cleanup, defineGuestDomain, domState, ensureLibvirtd, imageSha, suffix, virsh, type GuestDomain } from './libvirt.ts';
import { cycleOutcome, libvirtSites, pointSha, protect, view, type LibvirtSites } from './sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const sfx = suffix();
const name = `drt-${sfx}-web`;
let s: LibvirtSites | undefined;
let dom: GuestDomain;

beforeAll(async () => {
  s = await libvirtSites(sfx);
  dom = await defineGuestDomain(name, { run: { run: 'qga,churn' } });
}, 180_000);

afterAll(async () => {
  await s?.destroy();
  await cleanup([name]);
}, 60_000);

async function churnRound(): Promise<number> {
  const all = [...(await readFile(dom.serial, 'utf8').catch(() => '')).matchAll(/DRSITE churn (\d+)/g)];
  return all.length ? Number(all.at(-1)![1]) : 0;
}

/** Lets the guest write at least `rounds` more rounds. */
async function moreWrites(rounds: number): Promise<void> {
  const from = await churnRound();
  await waitForLine(dom.serial, new RegExp(`DRSITE churn ${Math.ceil((from + rounds) / 10) * 10}\\b`), 90_000);
}

/** A cut with the domain paused: the point must equal the image as it is now. */
async function pausedCut(id: string): Promise<{ seq: number; image: string; action: string; bytes?: number }> {
  await virsh('suspend', name);
  try {
    const r = await cycleOutcome(s!.a, id);
    return { seq: r.sequence, image: await imageSha(dom.disk), action: r.action, ...(r.bytes !== undefined && { bytes: r.bytes }) };
  } finally {
    await virsh('resume', name);
  }
}

describe('a libvirt domain protected through checkpoints', () => {
  test('initial copy and deltas while the guest writes, each point equal to the image at its cut; libvirtd, agent and guest restarts keep the chain; a lost checkpoint resyncs', async () => {
    await virsh('start', name);
    await moreWrites(10);
    // Listed before protection (what the reconciler checks a ProtectedVM against), not yet tracked.
    const before = (await send(s!.a, ROUTES.listVms, {})).json<{ name: string; power: string; tracking?: string; disks: { name: string; size: number }[] }[]>();
    expect(before.find((v) => v.name === name)).toEqual({ name, power: 'Running', adapters: [], disks: [{ name: 'vda', size: 32 << 20 }] });
    const id = await protect(s!, name);
    expect((await view(s!.a, id)).state).toBe('Replicating');
    const vms = (await send(s!.a, ROUTES.listVms, {})).json<{ name: string; tracking?: string; disks: { name: string }[] }[]>();
    expect(vms.find((v) => v.name === name)).toMatchObject({ disks: [{ name: 'vda' }], tracking: expect.stringMatching(/libvirt checkpoints.*persistent/) });
    expect(await virsh('checkpoint-list', name, '--name')).toMatch(/drsite-\d+/);

    const seen = new Set<string>();
    for (let round = 0; round < 2; round++) {
      await moreWrites(10);
      const { seq, image, action, bytes } = await pausedCut(id);
      expect(await pointSha(s!.b, id, seq)).toBe(image);
      seen.add(image);
      console.log(`delta ${seq}: ${action}, ${bytes} bytes shipped of a 32 MiB disk`);
      expect(action).toBe('delta');
    }
    expect(seen.size).toBe(2); // the guest did write in between
    // Only drsite's newest checkpoint is kept: each released cut deletes the one before.
    expect((await virsh('checkpoint-list', name, '--name')).trim().split('\n')).toHaveLength(1);

    // libvirtd restarts under a running guest: its checkpoints (and the qcow2 bitmaps) stay.
    const pid = Number((await readFile('/run/libvirtd.pid', 'utf8')).trim());
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100; i++) {
      try {
        process.kill(pid, 0);
        await new Promise((r) => setTimeout(r, 100));
      } catch {
        break;
      }
    }
    await ensureLibvirtd();
    await moreWrites(10);
    const after = await pausedCut(id);
    expect(await pointSha(s!.b, id, after.seq)).toBe(after.image);
    expect(after.action).toBe('delta');
    const v = await view(s!.a, id);
    expect(v.state).toBe('Replicating');
    expect(v.health).toBe('Normal');

    // The agent restarts: the next one goes on from the same checkpoint, still incremental.
    await s!.cluster.stopInProcess('host-a');
    await moreWrites(10);
    await s!.cluster.startInProcess('host-a');
    s!.a = await s!.cluster.client('host-a', undefined, 180_000);
    expect((await view(s!.a, id)).state).toBe('Replicating');
    const restarted = await pausedCut(id);
    expect(restarted.action).toBe('delta');
    expect(await pointSha(s!.b, id, restarted.seq)).toBe(restarted.image);

    // Someone deletes drsite's checkpoint: writes since the last cut are unknown, so the
    // relationship resynchronises (block compare) instead of shipping a delta it cannot trust.
    const [cp] = (await virsh('checkpoint-list', name, '--name')).trim().split('\n');
    await virsh('checkpoint-delete', name, cp!);
    await moreWrites(10);
    await expect(send(s!.a, ROUTES.replicateNow, { id })).rejects.toThrow(/resynchronization required/);
    const lost = await view(s!.a, id);
    expect(lost.state).toBe('ResynchronizationRequired');
    await virsh('suspend', name);
    try {
      const r = (await send(s!.a, ROUTES.resync, { id })).json<{ action: string; sequence: number }>();
      expect(r.action).toBe('resync');
      expect(await pointSha(s!.b, id, r.sequence)).toBe(await imageSha(dom.disk));
    } finally {
      await virsh('resume', name);
    }
    expect((await view(s!.a, id)).state).toBe('Replicating');
    await moreWrites(10);
    const healed = await pausedCut(id);
    expect(healed.action).toBe('delta');
    expect(await pointSha(s!.b, id, healed.seq)).toBe(healed.image);

    // The guest shuts down (a cut of the shut-off domain reads its saved bitmap) and starts again
    // (a new QEMU loads it from the qcow2): still deltas, still equal, no resync.
    await virsh('shutdown', name);
    for (let i = 0; i < 600 && (await domState(name)) !== 'shut off'; i++) await new Promise((r) => setTimeout(r, 100));
    const offline = await cycleOutcome(s!.a, id);
    expect(offline.action).toBe('delta');
    expect(await pointSha(s!.b, id, offline.sequence)).toBe(await imageSha(dom.disk));
    await virsh('start', name);
    await waitForLine(dom.serial, /DRSITE churn 20\b/, 90_000); // a fresh console: the new boot's rounds
    const restarted2 = await pausedCut(id);
    expect(restarted2.action).toBe('delta');
    expect(await pointSha(s!.b, id, restarted2.seq)).toBe(restarted2.image);
    expect((await view(s!.a, id)).state).toBe('Replicating');
  }, 240_000);
});
