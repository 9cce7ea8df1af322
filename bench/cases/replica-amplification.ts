// Case 5, replica write amplification: the same chain of delta points (30 minutes apart) applied
// to a replica keeping only the latest point and to one keeping 4 additional hourly points (undo
// segments, pruning and merging included). Amplification = bytes the replica wrote (received
// logs, image, undo, journal) per byte of disk the points changed.
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { encodeChain } from '../lib/chain.ts';
import { measureOwn } from '../lib/measure.ts';
import { ReplicaPeer } from '../lib/replica-peer.ts';
import { MiB, fmtSize } from '../lib/report-helpers.ts';
import type { BenchCase, BenchContext, CaseResult, Sample } from '../lib/types.ts';
import { CorrectnessError } from '../lib/types.ts';

const DISK = 'disk0';
const REL = 'bench-replica-amp';
const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 2, 1, 0, 0, 0);
const GOAL = 1.5;

type Stats = Record<string, number>;
const written = (s: Stats) => s.bytesReceived + s.imageBytesWritten + s.undoBytesWritten + s.journalBytesWritten;

export const replicaAmplification: BenchCase = {
  name: 'replica-amp',
  title: '5. Replica write amplification, 4 additional recovery points vs none',
  goal: `<= ${GOAL}x`,
  async run(ctx: BenchContext): Promise<CaseResult> {
    const size = ctx.quick ? 64 * MiB : 256 * MiB;
    const points = ctx.quick ? 6 : 12;
    const perPoint = ctx.quick ? 4 * MiB : 16 * MiB;
    const keys = { encryptionKey: randomBytes(32), macKey: randomBytes(32) };
    // The chain: a full initial copy of noise, then points of random 4 KiB writes; the image each leaves.
    ctx.log(`encoding a chain of ${points} points on a ${fmtSize(size)} disk`);
    const { logs, shaAt, changed: vmBytes } = await encodeChain({
      workDir: ctx.workDir, relationshipId: REL, diskId: DISK, size, points, perPoint, keys, t0: T0, spacingMs: HOUR / 2, seed: 5,
    });

    const samples: Record<number, Sample[]> = { 0: [], 4: [] };
    const checked: string[] = [];
    for (let r = 0; r < ctx.runs; r++) {
      for (const additional of [0, 4]) {
        const rdir = join(ctx.workDir, `replica-${additional}`);
        await rm(rdir, { recursive: true, force: true });
        await mkdir(rdir, { recursive: true });
        const peer = await ReplicaPeer.start({ dir: rdir, relationshipId: REL, diskId: DISK, diskSize: size, keys, additional });
        try {
          await peer.shipAndApply(1, logs[0]);
          const base = (await peer.stats()).stats;
          const run = await measureOwn(async () => {
            for (let p = 2; p <= points + 1; p++) await peer.shipAndApply(p, logs[p - 1]);
            const s = (await peer.stats()).stats;
            return Object.fromEntries(Object.keys(s).map((k) => [k, s[k] - base[k]]));
          }, {
            helper: () => peer.usage(),
            extra: (d) => ({ amplification: written(d) / vmBytes, imageBytes: d.imageBytesWritten, undoBytes: d.undoBytesWritten, receivedBytes: d.bytesReceived, journalBytes: d.journalBytesWritten }),
          });
          const got = await peer.imageSha256();
          if (got !== shaAt[points + 1]) throw new CorrectnessError(`replica-amp (${additional} points) run ${r + 1}: latest image ${got} != expected ${shaAt[points + 1]}`);
          const kept = (await peer.stats()).points.map((p) => p.sequence);
          if (additional > 0) {
            if (kept.length < 2) throw new CorrectnessError(`replica-amp: 4 additional points requested, replica kept only ${kept.join(', ')}`);
            // Exporting every older point's view costs a full disk copy each; the chain and the
            // store are deterministic, so the first run checks them and later runs the latest image.
            if (r === 0) {
              for (const seq of kept.slice(0, -1)) {
                const v = await peer.viewSha256(seq);
                if (v !== shaAt[seq]) throw new CorrectnessError(`replica-amp run ${r + 1}: view of point ${seq} is ${v}, expected ${shaAt[seq]}`);
              }
              checked.push(`points kept ${kept.join(', ')}; every older point's view = the image at that point (first run)`);
            }
          }
          samples[additional].push(run.sample);
        } finally {
          await peer.close();
        }
      }
    }
    const med = (s: Sample[]) => s.map((x) => x.extra!.amplification).sort((a, b) => a - b)[s.length >> 1];
    const ratio = med(samples[4]) / med(samples[0]);
    return {
      status: 'ok',
      scenarios: [{
        name: `${fmtSize(size)} disk, ${points} points of ${fmtSize(perPoint)} random 4 KiB writes, 30 min apart`,
        inputBytes: vmBytes,
        subjects: [
          { name: 'drsite replica, 4 additional points', ours: true, samples: samples[4] },
          { name: 'drsite replica, latest point only', ours: false, samples: samples[0] },
        ],
        goals: [{ text: `bytes written with 4 additional points <= ${GOAL}x without`, measured: `${ratio.toFixed(2)}x (${med(samples[4]).toFixed(2)} vs ${med(samples[0]).toFixed(2)} bytes written per byte changed)`, met: ratio <= GOAL }],
        verified: `sha256 of the latest image = expected after every run; ${checked.join('') || 'no older points checked'}`,
      }],
      notes: [
        'Bytes written by the replica = received sealed logs + image writes + undo segments (including merges at pruning) + journal, from ReplicaStore.stats(), over the delta points only (the initial full copy excluded). The logs hold incompressible data, so a log is about as large as the data it carries.',
        'Undo: before a point overwrites a range, its old content is saved; a point that the apply makes obsolete (a second point in the same hour) is folded into the new one in the same journal write, and ranges its undo already holds are not saved again.',
        'Here "Ours vs this" compares the two retention settings (wall time of applying the chain).',
      ],
    };
  },
};
