// A libvirt domain on a raw image: checkpoints cannot hold bitmaps in raw files, so its writes are
// tracked by QEMU's own dirty bitmaps through libvirt's monitor passthrough (`virsh
// qemu-monitor-command`), without restarting the guest. Deltas while the guest writes are each
// sha256-equal to the image at the cut (the domain paused for it); a libvirtd restart keeps the
// bitmaps (QEMU runs on). Shut off, a cut reads the whole image (every point still equal); started
// again, the relationship resynchronises (new bitmaps know nothing of what came before) and says
// so, and deltas resume after the resync.
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { waitForLine } from '../qemu/guest.ts';
import { cleanup, defineGuestDomain, domState, ensureLibvirtd, imageSha, suffix, virsh, type GuestDomain } from './libvirt.ts';
import { cycleOutcome, libvirtSites, pointSha, protect, view, type LibvirtSites } from './sites.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const sfx = suffix();
const name = `drt-${sfx}-raw`;
let s: LibvirtSites | undefined;
let dom: GuestDomain;

beforeAll(async () => {
  s = await libvirtSites(sfx);
  dom = await defineGuestDomain(name, { run: { run: 'churn' }, format: 'raw' });
}, 180_000);

afterAll(async () => {
  await s?.destroy();
  await cleanup([name]);
}, 60_000);

async function churnRound(): Promise<number> {
  const all = [...(await readFile(dom.serial, 'utf8').catch(() => '')).matchAll(/DRSITE churn (\d+)/g)];
  return all.length ? Number(all.at(-1)![1]) : 0;
}

async function moreWrites(rounds: number): Promise<void> {
  const from = await churnRound();
  await waitForLine(dom.serial, new RegExp(`DRSITE churn ${Math.ceil((from + rounds) / 10) * 10}\\b`), 90_000);
}

async function pausedCut(id: string): Promise<{ seq: number; image: string; action: string; bytes: number }> {
  await virsh('suspend', name);
  try {
    const r = await cycleOutcome(s!.a, id);
    return { seq: r.sequence, image: await imageSha(dom.disk, 'raw'), action: r.action, bytes: r.bytes ?? 0 };
  } finally {
    await virsh('resume', name);
  }
}

describe('a libvirt domain on a raw image', () => {
  test('deltas through QEMU dirty bitmaps via virsh passthrough; a libvirtd restart keeps them; a guest restart resyncs', async () => {
    await virsh('start', name);
    await moreWrites(10);
    const id = await protect(s!, name);
    const vms = (await send(s!.a, ROUTES.listVms, {})).json<{ name: string; tracking?: string }[]>();
    expect(vms.find((v) => v.name === name)?.tracking).toMatch(/QEMU dirty bitmaps through libvirt monitor passthrough \(not persistent\)/);

    for (let round = 0; round < 2; round++) {
      await moreWrites(10);
      const cut = await pausedCut(id);
      expect(cut.action).toBe('delta');
      expect(await pointSha(s!.b, id, cut.seq)).toBe(cut.image);
      // Only what the guest wrote ships (a few rounds of 64 KiB), not the 32 MiB disk.
      expect(cut.bytes).toBeGreaterThan(0);
      expect(cut.bytes).toBeLessThan(8 << 20);
    }

    // libvirtd restarts; QEMU and its bitmaps do not.
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
    expect(after.action).toBe('delta');
    expect(await pointSha(s!.b, id, after.seq)).toBe(after.image);

    // Shut off: the cut reads the whole image, and the point equals it.
    await send(s!.a, ROUTES.setVmPower, { name }, { power: 'Off', force: true, timeoutMs: 0 });
    expect(await domState(name)).toBe('shut off');
    const off = await cycleOutcome(s!.a, id);
    expect(await pointSha(s!.b, id, off.sequence)).toBe(await imageSha(dom.disk, 'raw'));

    // The agent restarts while the domain is off: nothing watched it meanwhile, so the relationship
    // is taken up again (not skipped until the domain runs) and resynchronises from its images.
    await s!.cluster.stopInProcess('host-a');
    await s!.cluster.startInProcess('host-a');
    // (Its first cycle, the scheduler's or this one, finds that out and fails; a forced one resyncs.)
    type Cycle = { action: string; sequence: number };
    let offResync = await send(s!.a, ROUTES.replicateNow, { id }).then((r) => r.json<Cycle>(), (e: Error) => e);
    if (offResync instanceof Error) {
      expect(offResync.message).toMatch(/was shut off when the agent started again: .*resynchronization required/);
      offResync = (await send(s!.a, ROUTES.resync, { id })).json<Cycle>();
    }
    expect(offResync.action).toBe('resync');
    expect((await view(s!.a, id)).state).toBe('Replicating');
    expect(await pointSha(s!.b, id, offResync.sequence)).toBe(await imageSha(dom.disk, 'raw'));
    expect((await view(s!.a, id)).state).toBe('Replicating');

    // Started again: new bitmaps, so the relationship resynchronises, saying why.
    await virsh('start', name);
    await moreWrites(10);
    await expect(send(s!.a, ROUTES.replicateNow, { id })).rejects.toThrow(/was started again: its QEMU dirty bitmaps are new/);
    expect((await view(s!.a, id)).state).toBe('ResynchronizationRequired');
    await virsh('suspend', name);
    try {
      const r = (await send(s!.a, ROUTES.resync, { id })).json<{ action: string; sequence: number }>();
      expect(r.action).toBe('resync');
      expect(await pointSha(s!.b, id, r.sequence)).toBe(await imageSha(dom.disk, 'raw'));
    } finally {
      await virsh('resume', name);
    }
    await moreWrites(10);
    const healed = await pausedCut(id);
    expect(healed.action).toBe('delta');
    expect(await pointSha(s!.b, id, healed.seq)).toBe(healed.image);
    expect((await view(s!.a, id)).state).toBe('Replicating');
  }, 240_000);
});
