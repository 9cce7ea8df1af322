// Case 1, resync: a 1 GiB image with 0%, 1% and 10% of its 4 KiB blocks rewritten, brought back in
// line with a replica holding the old content. Ours: keyed two-level block checksums on both sides
// (the replica is another process), a sealed log of the differing blocks, apply into the
// ReplicaStore. Peer: rsync --inplace --no-whole-file over a local pipe, so its delta algorithm
// runs (plain local rsync copies whole files), at its default block size and at -B 4096.
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { differingBlocks } from '../../src/core/block-checksums.ts';
import { RawDisk, sha256File } from '../../src/core/disk.ts';
import { coalesce, encodeLog } from '../../src/core/log-format.ts';
import { BLOCK_SIZE } from '../../src/core/types.ts';
import type { Extent, LogHeader, RelationshipKeys } from '../../src/core/types.ts';
import { copySynced, mutatedCopy, writeNoiseImage } from '../lib/data.ts';
import { measureOwn, runTool } from '../lib/measure.ts';
import { ReplicaPeer } from '../lib/replica-peer.ts';
import { GiB, MiB, fmtBytes, fmtRatio, fmtSize, wallMedian, wireMedian } from '../lib/report-helpers.ts';
import type { BenchCase, BenchContext, CaseResult, Goal, Sample, Scenario, Subject } from '../lib/types.ts';
import { CorrectnessError } from '../lib/types.ts';

const DISK = 'disk0';
const REL = 'bench-resync';
const RUN_BLOCKS = 256; // 1 MiB reads

async function oursOnce(primary: string, peer: ReplicaPeer, keys: RelationshipKeys): Promise<{ blocks: number; logBytes: number }> {
  const local = await RawDisk.open(primary, { readOnly: true });
  try {
    const diff = await differingBlocks(local, peer.digests, keys.macKey);
    const extents: Extent[] = [];
    for (let i = 0; i < diff.length; ) {
      let n = 1;
      while (i + n < diff.length && diff[i + n] === diff[i] + n && n < RUN_BLOCKS) n++;
      const at = diff[i] * BLOCK_SIZE;
      extents.push({ offset: at, data: await local.read(at, Math.min(n * BLOCK_SIZE, local.size - at)) });
      i += n;
    }
    const header: LogHeader = {
      relationshipId: REL, diskId: DISK, diskSize: local.size, sequence: 1, basePoint: 0, blockSize: BLOCK_SIZE,
      cutTime: Date.now(), consistency: 'crash', kind: 'resync', cutId: `resync-${randomBytes(4).toString('hex')}`,
    };
    const log = await encodeLog(header, coalesce(extents), keys);
    await peer.shipAndApply(1, log);
    return { blocks: diff.length, logBytes: log.length };
  } finally {
    await local.close();
  }
}

/** rsync --stats: "Total bytes sent: 1,234" and "Total bytes received: 56". */
function rsyncWire(stdout: string): number {
  const num = (label: string) => Number((new RegExp(`${label}:\\s*([\\d,.]+)`).exec(stdout)?.[1] ?? 'NaN').replace(/,/g, ''));
  return num('Total bytes sent') + num('Total bytes received');
}

export const resync: BenchCase = {
  name: 'resync',
  title: '1. Resync of a changed image vs rsync',
  goal: '<= 0.35x rsync wall time, bytes on the wire <= rsync -B 4096 (1% changed; also 0% and 10%)',
  async run(ctx: BenchContext): Promise<CaseResult> {
    const size = ctx.quick ? 32 * MiB : GiB;
    const keys = { encryptionKey: randomBytes(32), macKey: randomBytes(32) };
    const base = join(ctx.workDir, 'base.img');
    const rsh = join(ctx.workDir, 'local-rsh.sh');
    // rsync runs `<rsh> <host> rsync --server ...`: drop the host and run the server side locally.
    await writeFile(rsh, '#!/bin/sh\nshift\nexec "$@"\n');
    await chmod(rsh, 0o755);
    ctx.log(`writing a ${fmtSize(size)} base image`);
    await writeNoiseImage(base, size, 1);
    const haveRsync = ctx.tools.has('rsync');
    const scenarios: Scenario[] = [];
    for (const pct of [1, 0, 10]) {
      const primary = join(ctx.workDir, `primary-${pct}.img`);
      const changed = await mutatedCopy(base, primary, size, pct / 100, 100 + pct);
      const expected = await sha256File(primary);
      const samples: Record<string, Sample[]> = { ours: [], rsync: [], rsyncB: [] };
      let verified = 0;
      for (let r = 0; r < ctx.runs; r++) {
        // Ours: a fresh replica holding the old image, its peer process started before the clock.
        const rdir = join(ctx.workDir, 'replica');
        await rm(rdir, { recursive: true, force: true });
        await mkdir(rdir, { recursive: true });
        await copySynced(base, join(rdir, `${DISK}.img`));
        const peer = await ReplicaPeer.start({ dir: rdir, relationshipId: REL, diskId: DISK, diskSize: size, keys });
        try {
          const run = await measureOwn(() => oursOnce(primary, peer, keys), {
            helper: () => peer.usage(),
            onStart: () => peer.channel.resetCounters(),
            wireBytes: () => peer.channel.wireBytes,
            extra: (v) => ({ differingBlocks: v.blocks, logBytes: v.logBytes }),
          });
          const got = await peer.imageSha256();
          if (got !== expected) throw new CorrectnessError(`resync ${pct}%: replica sha256 ${got} != primary ${expected} (run ${r + 1})`);
          if (run.value.blocks !== changed) {
            throw new CorrectnessError(`resync ${pct}%: found ${run.value.blocks} differing blocks, ${changed} were changed (run ${r + 1})`);
          }
          samples.ours.push(run.sample);
          verified++;
        } finally {
          await peer.close();
        }
        if (!haveRsync) continue;
        for (const [key, extra] of [['rsync', []], ['rsyncB', ['-B', '4096']]] as const) {
          const dst = join(ctx.workDir, 'rsync-dst.img');
          await copySynced(base, dst);
          const t = await runTool(['rsync', '--inplace', '--no-whole-file', '-I', '--stats', ...extra, '-e', rsh, primary, `localhost:${dst}`], {
            wireBytes: rsyncWire,
          });
          const got = await sha256File(dst);
          if (got !== expected) throw new CorrectnessError(`rsync ${extra.join(' ')} ${pct}%: destination sha256 ${got} != ${expected}`);
          samples[key].push(t.sample);
        }
      }
      const subjects: Subject[] = [{ name: 'drsite resync', ours: true, samples: samples.ours }];
      if (haveRsync) {
        subjects.push({ name: 'rsync --inplace --no-whole-file', ours: false, samples: samples.rsync });
        subjects.push({ name: 'rsync --inplace --no-whole-file -B 4096', ours: false, samples: samples.rsyncB });
      }
      const goals: Goal[] = [];
      if (haveRsync) {
        const ours = wallMedian(subjects[0]);
        const fastest = Math.min(wallMedian(subjects[1]), wallMedian(subjects[2]));
        const wallRatio = ours / fastest;
        goals.push({ text: '<= 0.35x wall time of the faster rsync', measured: fmtRatio(wallRatio), met: wallRatio <= 0.35 });
        const ow = wireMedian(subjects[0]);
        const rw = wireMedian(subjects[2]);
        goals.push({ text: 'wire bytes <= rsync -B 4096', measured: `${fmtBytes(ow)} vs ${fmtBytes(rw)} (${fmtRatio(ow / rw)})`, met: ow <= rw });
      }
      scenarios.push({
        name: `${fmtSize(size)}, ${pct}% of 4 KiB blocks changed (${changed} blocks)`,
        inputBytes: size,
        subjects,
        goals,
        verified: `sha256 of the replica image = primary after every run (${verified}/${ctx.runs} ours${haveRsync ? `, ${ctx.runs * 2}/${ctx.runs * 2} rsync` : ''}), differing blocks found = blocks changed`,
      });
      await rm(primary, { force: true });
    }
    return {
      status: 'ok',
      scenarios,
      notes: [
        'Ours: HMAC-SHA-256 digests of 1 MiB blocks on both sides, then of the 4 KiB blocks inside differing 1 MiB blocks; a sealed resync log (zstd-1, AES-256-GCM, HMAC seal) of the differing blocks; received durably and applied by the ReplicaStore in a separate process. Wire = framed bytes on the pipe both ways (digest requests as block runs, raw 32-byte digests, the log).',
        `rsync runs client and server over a pipe (-e local-rsh.sh), -I so the quick check never skips the file; wire = "Total bytes sent" + "received" from --stats; CPU and RSS from /usr/bin/time over both rsync processes.${haveRsync ? '' : ' rsync is missing: no peer measured.'}`,
      ],
    };
  },
};
