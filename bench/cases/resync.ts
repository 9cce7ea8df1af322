// Case 1, resync: a 1 GiB image with 0%, 1% and 10% of its 4 KiB blocks rewritten, brought back in
// line with a replica holding the old content. Ours: keyed two-level block checksums on both sides
// (the replica is another process), a sealed log of the differing blocks, apply into the
// ReplicaStore. Peer: rsync --inplace --no-whole-file over a local pipe, so its delta algorithm
// runs (plain local rsync copies whole files), at its default block size and at -B 4096.
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { differingExtents } from '../../src/core/replication/differing-extents.ts';
import { RawDisk } from '../../src/core/disk/disk.ts';
import { coalesce, encodeLog } from '../../src/core/log/log-format.ts';
import { BLOCK_SIZE } from '../../src/core/types.ts';
import type { Extent, LogHeader, RelationshipKeys } from '../../src/core/types.ts';
import { copySynced, firstDifference, mutatedCopy, restoreBlocks, writeNoiseImage } from '../lib/data.ts';
import { measureOwn, runTool } from '../lib/measure.ts';
import { ReplicaPeer } from '../lib/replica-peer.ts';
import { GiB, MiB, fmtBytes, fmtRatio, fmtSize, wallMedian, wireMedian } from '../lib/report-helpers.ts';
import type { BenchCase, BenchContext, CaseResult, Goal, Sample, Scenario, Subject } from '../lib/types.ts';
import { CorrectnessError } from '../lib/types.ts';

const DISK = 'disk0';
const REL = 'bench-resync';
const READ_CHUNK = 8 << 20;

/** The primary image as a full cut yields it: data extents of 8 MiB, in order. */
async function* imageExtents(disk: RawDisk): AsyncGenerator<Extent> {
  const read = (at: number) => disk.read(at, Math.min(READ_CHUNK, disk.size - at));
  let next = read(0);
  for (let at = 0; at < disk.size; at += READ_CHUNK) {
    const data = await next;
    if (at + READ_CHUNK < disk.size) next = read(at + READ_CHUNK); // read ahead, as a cut does
    yield { offset: at, data };
  }
}

// The engine's resync path (PrimaryReplication's difference filter): the streaming multi-level
// compare over the cut's extents, against the replica peer's compare digests, into a sealed log.
async function oursOnce(primary: string, peer: ReplicaPeer, keys: RelationshipKeys): Promise<{ blocks: number; logBytes: number }> {
  const local = await RawDisk.open(primary, { readOnly: true });
  try {
    const extents: Extent[] = [];
    let blocks = 0;
    for await (const e of differingExtents(imageExtents(local), local.size, peer.digests, keys.macKey)) {
      extents.push(e);
      blocks += Math.ceil(('zero' in e ? e.length : e.data.length) / BLOCK_SIZE);
    }
    const header: LogHeader = {
      relationshipId: REL, diskId: DISK, diskSize: local.size, sequence: 1, basePoint: 0, blockSize: BLOCK_SIZE,
      cutTime: Date.now(), consistency: 'crash', kind: 'resync', cutId: `resync-${randomBytes(4).toString('hex')}`,
    };
    const log = await encodeLog(header, coalesce(extents), keys);
    await peer.shipAndApply(1, log);
    return { blocks, logBytes: log.length };
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
    // The targets (our replica's image, rsync's destination) are copied from the base once. Each
    // run leaves a target equal to the primary (checked byte for byte), which differs from the
    // base only in the blocks the scenario changed: rewriting those from the base (and fsyncing)
    // resets it, instead of a whole fsynced 1 GiB copy per run. Before a run a target always holds
    // the base, durably, and in the page cache, as after a fresh copy.
    const rdir = join(ctx.workDir, 'replica');
    const replicaImage = join(rdir, `${DISK}.img`);
    const dst = join(ctx.workDir, 'rsync-dst.img');
    await mkdir(rdir, { recursive: true });
    await copySynced(base, replicaImage);
    if (haveRsync) await copySynced(base, dst);
    const mustEqual = async (what: string, file: string, primary: string) => {
      const at = await firstDifference(file, primary);
      if (at >= 0) throw new CorrectnessError(`${what}: differs from the primary at byte ${at}`);
    };
    const scenarios: Scenario[] = [];
    for (const pct of [1, 0, 10]) {
      const primary = join(ctx.workDir, `primary-${pct}.img`);
      const changedBlocks = await mutatedCopy(base, primary, size, pct / 100, 100 + pct);
      const changed = changedBlocks.length;
      const samples: Record<string, Sample[]> = { ours: [], rsync: [], rsyncB: [] };
      let verified = 0;
      for (let r = 0; r < ctx.runs; r++) {
        // Ours: a fresh replica store over the old image, its peer process started before the clock.
        for (const name of await readdir(rdir)) if (name !== `${DISK}.img`) await rm(join(rdir, name), { recursive: true, force: true });
        const peer = await ReplicaPeer.start({ dir: rdir, relationshipId: REL, diskId: DISK, diskSize: size, keys });
        try {
          const run = await measureOwn(() => oursOnce(primary, peer, keys), {
            helper: () => peer.usage(),
            onStart: () => peer.channel.resetCounters(),
            wireBytes: () => peer.channel.wireBytes,
            extra: (v) => ({ differingBlocks: v.blocks, logBytes: v.logBytes }),
          });
          if (run.value.blocks !== changed) {
            throw new CorrectnessError(`resync ${pct}%: found ${run.value.blocks} differing blocks, ${changed} were changed (run ${r + 1})`);
          }
          samples.ours.push(run.sample);
        } finally {
          await peer.close();
        }
        await mustEqual(`resync ${pct}% replica image (run ${r + 1})`, replicaImage, primary);
        verified++;
        await restoreBlocks(base, replicaImage, changedBlocks);
        if (!haveRsync) continue;
        for (const [key, extra] of [['rsync', []], ['rsyncB', ['-B', '4096']]] as const) {
          const t = await runTool(['rsync', '--inplace', '--no-whole-file', '-I', '--stats', ...extra, '-e', rsh, primary, `localhost:${dst}`], {
            wireBytes: rsyncWire,
          });
          await mustEqual(`rsync ${extra.join(' ')} ${pct}% destination (run ${r + 1})`, dst, primary);
          await restoreBlocks(base, dst, changedBlocks);
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
        verified: `replica image byte-identical to the primary after every run (${verified}/${ctx.runs} ours${haveRsync ? `, ${ctx.runs * 2}/${ctx.runs * 2} rsync` : ''}), differing blocks found = blocks changed`,
      });
      await rm(primary, { force: true });
    }
    return {
      status: 'ok',
      scenarios,
      notes: [
        'Ours: the engine resync path (differingExtents over the primary image read as a cut, 64 MiB windows): 8-byte keyed digests (compareChecksums) of every 64 KiB block on both sides (AES-GMAC then AES), then of the 4 KiB blocks inside differing 64 KiB blocks (keyed SHA-256); a sealed resync log (zstd-1, AES-256-GCM, HMAC seal) of the differing blocks; received durably and applied by the ReplicaStore in a separate process. Wire = framed bytes on the pipe both ways (digest requests as block runs, raw 8-byte digests, the log).',
        'Between runs each target (replica image, rsync destination) is reset by rewriting the changed blocks from the base image and fsyncing it, not by a fresh copy.',
        `rsync runs client and server over a pipe (-e local-rsh.sh), -I so the quick check never skips the file; wire = "Total bytes sent" + "received" from --stats; CPU and RSS from /usr/bin/time over both rsync processes.${haveRsync ? '' : ' rsync is missing: no peer measured.'}`,
      ],
    };
  },
};
