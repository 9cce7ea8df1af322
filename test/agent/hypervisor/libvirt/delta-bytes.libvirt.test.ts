// What a delta of a libvirt domain ships against what was written. The domain (defined with plain
// `virsh define`, the test guest idle on its qcow2 system disk) has a second qcow2 disk the guest
// leaves alone; the test writes to it through the domain's own QEMU (HMP `qemu-io` over `virsh
// qemu-monitor-command`), so the checkpoint bitmap sees ordinary guest-visible writes and the test
// knows every byte written. Writes of whole 64 KiB blocks ship at most 1.2x their bytes; scattered
// 4 KiB writes ship the 64 KiB block each one dirties (the bitmap's granularity is the qcow2 cluster
// size, which libvirt does not let a checkpoint choose): the test holds that bound too, so a
// change that ships more than the dirty blocks fails. Every point equals the disks at its cut.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cleanup, defineGuestDomain, IMAGES, imageSha, suffix, virsh, type GuestDomain } from './libvirt.ts';
import { cycleOutcome, libvirtSites, pointSha, protect, type LibvirtSites } from './sites.ts';

const run = promisify(execFile);
const sfx = suffix();
const name = `drt-${sfx}-dlt`;
const DATA = join(IMAGES, name, 'data.qcow2');
const DATA_SIZE = 64 << 20;
const KiB64 = 64 << 10;
let s: LibvirtSites | undefined;
let dom: GuestDomain;

beforeAll(async () => {
  s = await libvirtSites(sfx);
  dom = await defineGuestDomain(name, {
    run: { run: 'wait' },
    extraDisks: [`<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${DATA}'/><target dev='vdb' bus='virtio'/></disk>`],
  });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', DATA, String(DATA_SIZE)]);
}, 180_000);

afterAll(async () => {
  await s?.destroy();
  await cleanup([name]);
}, 60_000);

/** Writes `len` bytes of `pattern` at `off` of a disk device (its QOM path) through the domain's QEMU. */
async function write(device: string, pattern: number, off: number, len: number): Promise<void> {
  const out = await virsh('qemu-monitor-command', '--hmp', name, `qemu-io -d ${device} "write -P ${pattern} ${off} ${len}"`);
  // qemu-io reports to QEMU's stdout (the domain's log); the monitor answers only an error. That
  // the writes happened is what the shipped bytes (at least 0.9x) and the point's sha256 show.
  if (out.trim() && !/wrote \d+\/\d+ bytes/.test(out)) throw new Error(`qemu-io write on ${name}: ${out.trim()}`);
}

/** A cut with the domain paused, and both disks' sha256 as they are at it. */
async function pausedCut(id: string) {
  await virsh('suspend', name);
  try {
    const r = await cycleOutcome(s!.a, id);
    return { ...r, vda: await imageSha(dom.disk), vdb: await imageSha(DATA) };
  } finally {
    await virsh('resume', name);
  }
}

describe('delta bytes of a libvirt domain', () => {
  test('whole 64 KiB blocks ship at most 1.2x the bytes written; scattered 4 KiB writes at most their 64 KiB blocks; every point equals the disks', async () => {
    await virsh('start', name);
    // vdb's virtio device, as `info block` names what its image is attached to: the guest's own
    // write path, so the checkpoint's bitmap on the format node below it sees every write.
    const device = new RegExp(`: ${DATA} \\(qcow2\\)\\r?\\n\\s+Attached to:\\s+(\\S+)`).exec(await virsh('qemu-monitor-command', '--hmp', name, 'info block'))?.[1];
    expect(device).toMatch(/^\/machine\/peripheral\/virtio-disk\d+\/virtio-backend$/);
    const id = await protect(s!, name);
    const quiet = await pausedCut(id); // what the idle guest itself writes between cuts
    const report: string[] = [];

    for (let round = 0; round < 3; round++) {
      let written = 0;
      for (let k = 0; k < 6; k++) {
        const blocks = 1 + ((k * 5 + round * 3) % 12);
        const off = ((k * 151 + round * 61) % (DATA_SIZE / KiB64 - 12)) * KiB64;
        await write(device!, 0x20 + round * 8 + k, off, blocks * KiB64);
        written += blocks * KiB64;
      }
      const r = await pausedCut(id);
      expect(r.action).toBe('delta');
      expect(await pointSha(s!.b, id, r.sequence)).toBe(r.vda);
      expect(await pointSha(s!.b, id, r.sequence, 'vdb')).toBe(r.vdb);
      report.push(`64 KiB blocks: wrote ${written}, shipped ${r.bytes}`);
      expect(r.bytes!).toBeGreaterThanOrEqual(written * 0.9); // overlaps only shrink it
      expect(r.bytes!).toBeLessThanOrEqual(1.2 * written);
    }

    const count = 40;
    for (let k = 0; k < count; k++) await write(device!, 0x70, ((k * 37) % (DATA_SIZE / KiB64)) * KiB64 + (k % 16) * 4096, 4096);
    const r = await pausedCut(id);
    expect(await pointSha(s!.b, id, r.sequence, 'vdb')).toBe(r.vdb);
    report.push(`${count} scattered 4 KiB writes: wrote ${count * 4096}, shipped ${r.bytes}`);
    expect(r.bytes!).toBeLessThanOrEqual(1.2 * count * KiB64);
    console.log(`delta-bytes.test.ts (idle cut shipped ${quiet.bytes ?? 0}): ${report.join('; ')}`);
  }, 240_000);
});
