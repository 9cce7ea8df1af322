// Case 8, primary write amplification: a random 4 KiB write workload through the tracker while a
// shipper reads the previous cut, cycle after cycle. Amplification = bytes the primary stored
// (image, copy-before-write side file, tracking state) per byte the VM wrote. Peers: the same
// workload on an untracked image (the tracker's overhead) and on a model of a write log
// (Hyper-V's .hrl: each write goes to the image and is appended to a log).
import { open, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { cutVm } from '../../src/core/tracking/cut.ts';
import { RawDisk, sha256File } from '../../src/core/disk/disk.ts';
import { TrackedDisk } from '../../src/core/tracking/tracker.ts';
import type { BlockDevice } from '../../src/model/block-device.ts';
import { runWorkload } from '../../src/demo/workload.ts';
import { measureOwn } from '../lib/measure.ts';
import { MiB, fmtRatio, fmtSize, wallMedian } from '../lib/report-helpers.ts';
import type { BenchCase, BenchContext, CaseResult, Sample } from '../lib/types.ts';
import { CorrectnessError } from '../lib/types.ts';

const RECORD_HEADER = 32; // offset, length, checksum: what a write-log record carries besides data

/** A write log in the Hyper-V style: every write lands on the image and is appended to the log. */
class LoggedDisk implements BlockDevice {
  readonly size: number;
  logBytes = 0;
  readonly #disk: RawDisk;
  readonly #log: FileHandle;
  constructor(disk: RawDisk, log: FileHandle) {
    this.#disk = disk;
    this.#log = log;
    this.size = disk.size;
  }
  read(offset: number, length: number): Promise<Buffer> {
    return this.#disk.read(offset, length);
  }
  async write(offset: number, data: Buffer): Promise<void> {
    const head = Buffer.alloc(RECORD_HEADER);
    head.writeBigUInt64LE(BigInt(offset), 0);
    head.writeUInt32LE(data.length, 8);
    await this.#log.writev([head, data], this.logBytes);
    this.logBytes += RECORD_HEADER + data.length;
    await this.#disk.write(offset, data);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.write(offset, Buffer.alloc(length));
  }
  flush(): Promise<void> {
    return this.#disk.flush();
  }
}

export const primaryAmplification: BenchCase = {
  name: 'primary-amp',
  title: '8. Primary write amplification of the tracker',
  goal: 'report bytes written to disk and side files per byte written by the VM (Hyper-V write log: about 2x)',
  async run(ctx: BenchContext): Promise<CaseResult> {
    const size = ctx.quick ? 64 * MiB : 256 * MiB;
    const cycles = ctx.quick ? 3 : 5;
    const perCycle = ctx.quick ? 8 * MiB : 32 * MiB;
    const ours: Sample[] = [];
    const raw: Sample[] = [];
    const logged: Sample[] = [];
    for (let r = 0; r < ctx.runs; r++) {
      const img = join(ctx.workDir, 'primary.img');
      const replica = join(ctx.workDir, 'replica.img');
      await rm(img, { force: true });
      await rm(`${img}.cbt`, { force: true });
      const rfh = await open(replica, 'w');
      await rfh.truncate(size);
      const disk = await TrackedDisk.create(img, size, { id: 'disk0' });
      let shippedBytes = 0;
      const run = await measureOwn(async () => {
        // Cycle k: the VM writes while the shipper reads cut k-1; the copy-before-write only pays
        // for blocks the VM rewrites before the shipper got to them.
        let prev: Awaited<ReturnType<typeof cutVm>> | undefined;
        const ship = async (cut: Awaited<ReturnType<typeof cutVm>> | undefined) => {
          if (!cut) return;
          for await (const e of cut.disks[0].extents()) {
            const data = 'data' in e ? e.data : Buffer.alloc(e.length);
            await rfh.write(data, 0, data.length, e.offset);
            shippedBytes += data.length;
          }
          await cut.release();
        };
        for (let k = 0; k < cycles; k++) {
          await Promise.all([runWorkload({ device: disk }, { pattern: 'random', totalBytes: perCycle, seed: 1000 * r + k, queueDepth: 1 }), ship(prev)]);
          prev = await cutVm([disk], { cutId: `c${k}`, time: Date.now() });
        }
        await ship(prev);
        await disk.flush();
        return disk.writeStats();
      }, { extra: (s) => ({ amplification: s.amplification, cbwCopiedBytes: s.cbwCopiedBytes, cbwSideFileBytes: s.cbwSideFileBytes, stateFileBytes: s.stateFileBytes }) });
      await disk.close();
      await rfh.close();
      const [a, b] = await Promise.all([sha256File(img), sha256File(replica)]);
      if (a !== b) throw new CorrectnessError(`primary-amp run ${r + 1}: image shipped through ${cycles} cuts differs from the primary (${b} != ${a})`);
      ours.push({ ...run.sample, extra: { ...run.sample.extra, shippedBytes } });

      for (const kind of ['raw', 'logged'] as const) {
        await rm(img, { force: true });
        const rd = await RawDisk.create(img, size);
        const lfh = kind === 'logged' ? await open(join(ctx.workDir, 'write.hrl'), 'w') : undefined;
        const dev: BlockDevice = lfh ? new LoggedDisk(rd, lfh) : rd;
        const peer = await measureOwn(async () => {
          for (let k = 0; k < cycles; k++) await runWorkload({ device: dev }, { pattern: 'random', totalBytes: perCycle, seed: 1000 * r + k, queueDepth: 1 });
          await dev.flush();
          const vm = cycles * perCycle;
          return (rd.bytesWritten + (dev instanceof LoggedDisk ? dev.logBytes : 0)) / vm;
        }, { extra: (amp) => ({ amplification: amp }) });
        await rd.close();
        await lfh?.close();
        (kind === 'raw' ? raw : logged).push(peer.sample);
      }
    }
    const amp = ours.map((s) => s.extra!.amplification).sort((x, y) => x - y)[ours.length >> 1];
    const logAmp = logged.map((s) => s.extra!.amplification).sort((x, y) => x - y)[logged.length >> 1];
    const subjects = [
      { name: 'drsite tracker (dirty bitmap + copy-before-write), shipper reading concurrently', ours: true, samples: ours },
      { name: 'untracked raw image', ours: false, samples: raw },
      { name: 'write-log model (image + appended log, Hyper-V .hrl style)', ours: false, samples: logged },
    ];
    return {
      status: 'ok',
      scenarios: [{
        name: `${fmtSize(size)} disk, ${cycles} cycles of ${fmtSize(perCycle)} random 4 KiB writes`,
        inputBytes: cycles * perCycle,
        subjects,
        goals: [
          { text: 'primary write amplification (report; write log ~2x)', measured: `${amp.toFixed(3)}x vs ${logAmp.toFixed(3)}x write log`, met: null },
          { text: 'tracking overhead vs an untracked image (informational)', measured: fmtRatio(wallMedian(subjects[0]) / wallMedian(subjects[1])), met: null },
        ],
        verified: `sha256 of a replica image built only from the shipped cuts = primary image after the last cut (${ours.length}/${ctx.runs} runs)`,
      }],
      notes: [
        'Amplification = (image bytes + copy-before-write side-file bytes + tracking-state bytes) / VM bytes, from TrackedDisk.writeStats(). Copy-before-write in memory (cbwCopiedBytes) costs no disk writes.',
        'Ours times the writes and the shipper reading each cut concurrently (the shipper writes a plain replica file); the peers time the writes only.',
      ],
    };
  },
};
